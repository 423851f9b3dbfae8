//! The Sync API: wire types, the HTTP client, and the `Platform` that runs use, which is either
//! a remote platform over HTTP or the embedded SQLite store.

pub mod client;
pub mod types;

pub use types::*;
