//! `defsync dispatch`. STUB: to be implemented.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct DispatchArgs {}

pub async fn run(_args: &DispatchArgs) -> crate::error::Result<String> {
    Err(crate::error::Error::Config("dispatch is not implemented yet".into()))
}
