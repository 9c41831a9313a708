//! The integration tests, one binary (as ripgrep's are): each module drives
//! the real daemon, its command line or its library from outside, with the
//! helpers in `common/` (fixtures, a daemon on 127.0.0.1:0, stand-ins for
//! the services, a real SMTP server, a test CA, pebble).

mod common;

mod accepted;
mod acme;
mod archive;
mod catch_up;
mod cli;
mod crash;
mod dashboard;
mod deliver;
mod digest;
mod discord;
mod edge_times;
mod fault;
mod front_door;
mod hostile;
mod intake;
mod lifecycle;
mod ntfy;
mod outbound;
mod pagerduty;
mod panic;
mod pipeline;
mod postgres;
mod render;
mod replicate_api;
mod service;
mod socket;
mod store;
mod teams;
mod tls;
