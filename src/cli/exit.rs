//! Exit codes: the contract with PostgreSQL and with scripts, in one table.
//! See docs/exit-codes.md. `wal-fetch` alone maps its verdict differently
//! (src/cli/wal_fetch.rs), because PostgreSQL reads its codes differently.

use pitr::error::ErrorKind;

/// Done (stored, or already archived with the same content; fetched).
pub const OK: u8 = 0;
/// Failed: the store, the network, the local disk or PostgreSQL; trying
/// again may work (wal-push: PostgreSQL retries). wal-fetch: not in the
/// archive (or, in standby mode, any failure: fall back to streaming).
pub const FAILED: u8 = 1;
/// Bad arguments or settings.
pub const USAGE: u8 = 2;
/// Refused: different content already archived under the name, WAL of
/// another database system, a file that is not what its name says, stored
/// data that fails verification, or the wrong encryption key.
pub const REFUSED: u8 = 3;
/// Not there: the backup, object or restore target asked for is not in the
/// repository, or cannot be reached from what it holds (a gap, missing WAL,
/// a target after the end of the archive).
pub const UNREACHABLE: u8 = 4;
/// `archive verify` found the archive unhealthy (a gap, a history
/// problem, a damaged or foreign object, a backup whose WAL is incomplete),
/// or `check` found a check that fails: the command itself worked.
pub const PROBLEMS: u8 = 5;
/// wal-fetch failed for a reason other than "not found" outside standby
/// mode: above 125, so PostgreSQL stops recovery instead of promoting early.
pub const FETCH_FATAL: u8 = 255;

/// The exit code of every command but wal-fetch for an error of `kind`.
pub fn for_error(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Config => USAGE,
        ErrorKind::Conflict | ErrorKind::Corrupt | ErrorKind::WrongKey => REFUSED,
        ErrorKind::NotFound | ErrorKind::Unreachable => UNREACHABLE,
        ErrorKind::Store | ErrorKind::Io | ErrorKind::Postgres => FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_that_retrying_cannot_fix_are_not_plain_failures() {
        for kind in [
            ErrorKind::Config,
            ErrorKind::Conflict,
            ErrorKind::Corrupt,
            ErrorKind::WrongKey,
            ErrorKind::NotFound,
            ErrorKind::Unreachable,
        ] {
            assert_ne!(for_error(kind), FAILED, "{kind:?}");
        }
        assert_eq!(for_error(ErrorKind::Store), FAILED);
        // No error maps to the code that means "the check ran and found problems".
        for kind in [
            ErrorKind::Config,
            ErrorKind::Conflict,
            ErrorKind::Corrupt,
            ErrorKind::WrongKey,
            ErrorKind::NotFound,
            ErrorKind::Unreachable,
            ErrorKind::Store,
            ErrorKind::Io,
            ErrorKind::Postgres,
        ] {
            assert_ne!(for_error(kind), PROBLEMS, "{kind:?}");
        }
        assert_eq!(
            for_error(ErrorKind::WrongKey),
            for_error(ErrorKind::Corrupt)
        );
    }
}
