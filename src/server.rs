//! `defsync serve`: the Sync API over HTTP (axum), on the SQLite store. STUB: to be implemented.

use std::net::SocketAddr;
use std::path::PathBuf;

pub struct ServeOptions {
    pub store: PathBuf,
    pub listen: SocketAddr,
    /// Accepted API keys; never logged.
    pub keys: Vec<String>,
}

/// Runs until SIGINT or SIGTERM.
pub async fn serve(_options: ServeOptions) -> anyhow::Result<()> {
    unimplemented!()
}
