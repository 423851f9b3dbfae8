//! defsync's integration tests: one binary, real `git`, a real `defsync serve` on 127.0.0.1.

mod action;
mod conformance;
mod credentials;
mod dashboard;
mod faults;
mod files;
mod firsthour;
mod firstpull;
mod fuzzing;
mod github;
mod gitlab;
mod gitlab_ci;
mod guard;
mod interleave;
mod keys;
mod numbers;
mod ops;
mod postgres;
mod proofs;
mod proxy;
mod server;
mod support;
mod sync;
mod webhooks;
mod yaml12;
