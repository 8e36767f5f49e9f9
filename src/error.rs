//! The one error type of the library. Every variant carries a message that
//! names the input that failed and, where there is one, the fix.

use std::io;

/// What kind of failure this is: the command layer maps kinds to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad settings or arguments: retrying will not help.
    Config,
    /// The requested object is not in the repository.
    NotFound,
    /// The repository already holds something different (another cluster's
    /// WAL, a different object under the same name).
    Conflict,
    /// Stored data failed verification (checksum, gzip CRC, GCM tag).
    Corrupt,
    /// Client-side encryption key does not match the object, or is missing.
    WrongKey,
    /// The object store refused or could not be reached.
    Store,
    /// Local file-system failure.
    Io,
    /// The PostgreSQL server refused, failed, or spoke out of turn.
    Postgres,
    /// A restore target cannot be reached from what the repository holds
    /// (WAL missing, a gap, a target after the end of the archive).
    Unreachable,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    WrongKey(String),
    #[error("{0}")]
    Store(String),
    #[error("{0}")]
    Postgres(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::Config,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Corrupt(_) => ErrorKind::Corrupt,
            Error::WrongKey(_) => ErrorKind::WrongKey,
            Error::Store(_) => ErrorKind::Store,
            Error::Postgres(_) => ErrorKind::Postgres,
            Error::Unreachable(_) => ErrorKind::Unreachable,
            Error::Io { .. } => ErrorKind::Io,
        }
    }

    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Turns an I/O error that came out of a decoding pipeline back into the
    /// library error it carries (the codec layer smuggles `Error` through
    /// `io::Error::other`), or wraps it with `context`.
    pub fn from_pipeline(context: &str, e: io::Error) -> Self {
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            let inner = e.into_inner().expect("checked above");
            return *inner.downcast::<Error>().expect("checked above");
        }
        match e.kind() {
            io::ErrorKind::InvalidData
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::UnexpectedEof => Error::Corrupt(format!("{context}: {e}")),
            _ => Error::io(context, e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
