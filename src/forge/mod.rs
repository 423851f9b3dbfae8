//! Forges: where the repository lives. A forge delivers what the engine decided.

pub mod github;
