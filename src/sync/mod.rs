//! Runs: pull, push, status, link.
