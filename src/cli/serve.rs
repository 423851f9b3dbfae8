//! `defsync serve`. STUB: to be implemented.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {}

pub async fn run(_args: ServeArgs) -> anyhow::Result<()> {
    unimplemented!()
}
