//! pitr's error kinds as gRPC status codes, with secrets scrubbed from the
//! message. CloudNativePG does not look at the code (any error is exit 1),
//! but writes the message into the Cluster's status and logs it.

use pitr::config::redact;
use pitr::error::{Error, ErrorKind};
use tonic::{Code, Status};

pub fn code_for(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::Config => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Conflict => Code::AlreadyExists,
        ErrorKind::Corrupt => Code::DataLoss,
        ErrorKind::WrongKey => Code::FailedPrecondition,
        ErrorKind::Unreachable => Code::FailedPrecondition,
        ErrorKind::Store => Code::Unavailable,
        ErrorKind::Io | ErrorKind::Postgres => Code::Internal,
    }
}

/// A library error as a status, `secrets` replaced by `***`.
pub fn from_error(e: &Error, secrets: &[String]) -> Status {
    Status::new(code_for(e.kind()), redact(&e.to_string(), secrets))
}
