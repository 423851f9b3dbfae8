//! The typed errors of the core, and the exit statuses they map to.

/// Exit statuses: part of defsync's interface, documented in the README.
pub mod exit {
    /// Success, whether or not anything changed.
    pub const OK: i32 = 0;
    /// Failure: network, platform, Git.
    pub const FAILURE: i32 = 1;
    /// Usage or configuration error, including a refused direction or link, and a run stopped by
    /// the deletion guard (`--max-deletions`).
    pub const USAGE: i32 = 2;
    /// Conflicts found; nothing changed on either side.
    pub const CONFLICT: i32 = 3;
    /// Invalid definitions (local files or platform data); nothing changed on either side.
    pub const INVALID: i32 = 4;
    /// `defsync conformance`: the server broke at least one rule of the contract.
    pub const NONCONFORMING: i32 = 5;
}

/// An error that ends a run. Conflicts and invalid files are not errors: they are reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user's configuration or arguments are wrong (exit 2).
    #[error("{0}")]
    Config(String),
    /// The platform refused or failed a request (exit 1).
    #[error("platform: {0}")]
    Platform(Box<crate::platform::PlatformError>),
    /// Definitions given to a command are invalid, such as two files with one key (exit 4).
    #[error("{0}")]
    Invalid(String),
    /// A Git command failed (exit 1).
    #[error("git: {0}")]
    Git(String),
    /// Anything else (exit 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => exit::USAGE,
            Error::Platform(e) if matches!(**e, crate::platform::PlatformError::InvalidDefinition(_)) => exit::INVALID,
            Error::Invalid(_) => exit::INVALID,
            _ => exit::FAILURE,
        }
    }
}

impl From<crate::platform::PlatformError> for Error {
    fn from(e: crate::platform::PlatformError) -> Self {
        Error::Platform(Box::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
