//! Talking back to Replicate: its HTTP API, with the account's token.
//! [`client`] is the one client every caller goes through (`fetch-secret`
//! today; creating the next stage of a pipeline and catching up on
//! webhooks that never came build on it): bearer token, a base URL that
//! tests point at a stand-in, every request bounded in time and size,
//! `Retry-After` honoured, pages followed on Replicate's own host only.

pub mod catch_up;
pub mod client;

pub use client::{Api, ApiError};

/// Where Replicate's API is.
pub const API_URL: &str = "https://api.replicate.com/";
