//! Tests: the GitHub layer against a stand-in backed by a real bare repository.
