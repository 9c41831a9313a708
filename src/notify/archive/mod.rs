//! The `archive` kind: a routed final job's body and every file it names,
//! kept where the user says (a directory or an object store) before
//! Replicate deletes them an hour after the job ends.
//!
//! [`source`] decides what is fetched: the URLs a job names, anywhere in
//! its output, and which of them the relay may fetch at all; [`resolve`]
//! holds the connection to that rule, address by address, and
//! [`download`] each request and its redirects; [`path`] names
//! the folder and the files under `to`; [`directory`] keeps them in a
//! directory, whole or not at all. The kind joins
//! [`super::registry`] once it can also fetch and keep them.

pub mod directory;
pub mod download;
pub mod path;
pub mod resolve;
pub mod source;
