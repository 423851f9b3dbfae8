//! `defsync doctor` on GitLab.
