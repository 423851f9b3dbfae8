//! defsync's integration tests: one binary, real `git`, a real `defsync serve` on 127.0.0.1.

mod action;
mod faults;
mod files;
mod github;
mod interleave;
mod proxy;
mod server;
mod support;
mod sync;
