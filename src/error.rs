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

    /// The same error, of the same kind, with `note` appended to its message.
    pub fn with_note(self, note: &str) -> Self {
        let add = |m: String| format!("{m}; {note}");
        match self {
            Error::Config(m) => Error::Config(add(m)),
            Error::NotFound(m) => Error::NotFound(add(m)),
            Error::Conflict(m) => Error::Conflict(add(m)),
            Error::Corrupt(m) => Error::Corrupt(add(m)),
            Error::WrongKey(m) => Error::WrongKey(add(m)),
            Error::Store(m) => Error::Store(add(m)),
            Error::Postgres(m) => Error::Postgres(add(m)),
            Error::Unreachable(m) => Error::Unreachable(add(m)),
            Error::Io { context, source } => Error::Io {
                context,
                source: io::Error::new(source.kind(), add(source.to_string())),
            },
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

/// `e` with the errors that caused it, `: `-separated, repeats left out:
/// a body read that failed says "streaming error: ... Connection reset by
/// peer", not only "streaming error".
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod cause_tests {
    #[test]
    fn causes_are_appended_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("streaming error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(inner);
        assert_eq!(super::with_causes(&e), "streaming error: connection reset");
    }
}
