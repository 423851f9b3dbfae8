//! CI runtimes: what runs defsync. A runtime supplies the event's inputs and shows the outcome.

pub mod actions;
