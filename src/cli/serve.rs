//! `defsync serve`: run the reference platform, the Sync API on a SQLite store.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::server::{ServeOptions, serve};

#[derive(Clone, Args)]
pub struct ServeArgs {
    /// The SQLite store to serve; created, with its folders, if missing.
    #[arg(long, env = "DEFSYNC_STORE", default_value = ".defsync/store.db")]
    pub store: PathBuf,
    /// The address to listen on (port 0 picks a free one; the address is printed on start).
    #[arg(long, env = "DEFSYNC_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// An API key that clients may send as `Authorization: Bearer <key>`; repeat for several.
    /// Keys given in DEFSYNC_SERVER_KEYS (comma-separated) are accepted too.
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
    /// API keys from the environment, comma-separated (merged with --key).
    #[arg(
        long = "server-keys",
        env = "DEFSYNC_SERVER_KEYS",
        hide_env_values = true,
        value_delimiter = ',',
        hide = true
    )]
    pub env_keys: Vec<String>,
}

/// Keys are secrets: they never appear in debug output.
impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("store", &self.store)
            .field("listen", &self.listen)
            .field("keys", &format_args!("[{} hidden]", self.keys.len() + self.env_keys.len()))
            .finish()
    }
}

impl ServeArgs {
    /// Every key given, trimmed, without empty ones and duplicates.
    fn all_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for k in self.keys.iter().chain(&self.env_keys).map(|k| k.trim()).filter(|k| !k.is_empty()) {
            if !keys.iter().any(|have| have == k) {
                keys.push(k.to_owned());
            }
        }
        keys
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let keys = args.all_keys();
    if keys.is_empty() {
        anyhow::bail!(
            "defsync serve needs at least one API key: give --key <key> (repeatable) or set \
             DEFSYNC_SERVER_KEYS=<key1>,<key2>; clients then send it as DEFSYNC_API_KEY"
        );
    }
    serve(ServeOptions { store: args.store, listen: args.listen, keys }).await
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn keys_merge_and_stay_hidden() {
        let cli = Cli::parse_from(["serve", "--key", "a", "--key", " b ", "--server-keys", "c,,a"]);
        assert_eq!(cli.args.all_keys(), ["a", "b", "c"]);
        let shown = format!("{:?}", cli.args);
        assert!(!shown.contains("\"a\"") && shown.contains("hidden"), "{shown}");
    }
}
