//! The store's schema version, shared by both backends: a version number means the same tables
//! in SQLite (`sqlite.rs`) and PostgreSQL (`postgres.rs`), so one migration list describes both.

pub mod postgres;
pub mod sqlite;

/// Bumped on any change to the tables; a store from a newer defsync is refused.
pub const VERSION: i64 = 5;

/// The version a store is at, if this defsync can use it.
fn check_version(v: i64) -> anyhow::Result<i64> {
    if v > VERSION {
        anyhow::bail!(
            "the store has schema version {v}, newer than this defsync knows ({VERSION}): use a newer defsync"
        );
    }
    if v < 1 {
        anyhow::bail!("the store has an unknown schema version {v}");
    }
    Ok(v)
}
