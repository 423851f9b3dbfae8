//! The command line: one file per subcommand, each turning its arguments into a core request.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "defsync", version, about = "Keep a platform's project definitions and a Git repository in sync")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the reference platform (the Sync API on SQLite).
    Serve,
}

pub fn run(_cli: Cli) -> i32 {
    0
}
