//! `defsync doctor`. STUB: to be implemented.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {}

/// Returns the process exit status.
pub async fn run(_args: &DoctorArgs) -> i32 {
    eprintln!("doctor is not implemented yet");
    crate::error::exit::FAILURE
}
