//! defsync keeps a platform's project definitions and a Git repository in sync, both ways.
//!
//! Data flows one way: [`scan`] the branch, read the platform, [`plan`] per key, then apply.

pub mod actions;
pub mod api;
pub mod cli;
pub mod conformance;
pub mod digest;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod git;
pub mod github;
pub mod layout;
pub mod model;
pub mod output;
pub mod plan;
pub mod platform;
pub mod report;
pub mod scan;
pub mod server;
pub mod store;
pub mod sync;
pub mod yaml;
