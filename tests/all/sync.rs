//! Tests: sync.
