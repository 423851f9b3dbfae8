//! Git, through the `git` command line.
