//! The engine: runs `pull`, `push`, `status` and `link`, following contract part 4. It knows no
//! forge and no CI runtime: a pull hands what it decided to a [`crate::forge::Forge`], and the
//! CLI shows the [`Report`](crate::report::Report) it returns through a [`crate::ci::Runtime`].
//!
//! Each run reads both sides ([`state`], [`tree`]), plans with [`plan`] (the three-way rules),
//! and only then writes. Every write is a compare-and-swap (the platform commit's `parent`, a
//! fast-forward Git push, `If-Match` on the record); a run that loses re-reads and re-plans.

mod base;
mod conflicts;
pub mod guard;
pub mod layout;
mod link;
mod packed;
pub mod plan;
mod pull;
mod push;
mod request;
pub mod scan;
pub mod state;
mod status;
pub mod tree;

pub use guard::DeletionLimit;
pub use link::link;
pub use pull::pull;
pub use push::push;
pub use request::{Request, normalize_path};
pub use state::{PlatformState, read_platform};
pub use status::status;
pub use tree::{GitFile, Tree, scan_commit};

/// How many times a run re-plans after losing a race before it gives up.
pub const MAX_ATTEMPTS: u32 = 5;
