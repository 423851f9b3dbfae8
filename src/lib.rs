//! defsync keeps a platform's project definitions and a Git repository in sync, both ways.
//!
//! Data flows one way: [`engine::scan`] the branch, read the platform, [`engine::plan`] per key,
//! then apply. The layers, each using only those below it (docs/architecture.md):
//! - the edge: [`cli`] (arguments, environment, exit codes), [`server`] (`defsync serve`) and
//!   [`conformance`] (a black-box check of any Sync API server, over HTTP only);
//! - the adapters: [`forge`] (GitHub: API commits, pull requests, dispatch, doctor) and [`ci`]
//!   (GitHub Actions or none: event inputs, outputs, summary, annotations, masking);
//! - the [`engine`]: scan, plan, apply for `pull`, `push`, `status` and `link`; it knows no
//!   forge and no CI, and takes both as values;
//! - the parts: [`model`], [`digest`], [`yaml`], [`git`], [`api`] and [`platform`], [`report`],
//!   [`store`].

pub mod api;
pub mod ci;
pub mod cli;
pub mod conformance;
pub mod digest;
pub mod engine;
pub mod error;
pub mod forge;
#[doc(hidden)]
pub mod fuzzing;
pub mod git;
pub mod markdown;
pub mod model;
pub mod net;
pub mod output;
pub mod platform;
pub mod report;
pub mod server;
pub mod store;
pub mod yaml;
