//! Exit codes: the contract with PostgreSQL and with scripts.
//! See docs/exit-codes.md.

/// Done (stored, or already archived with the same content; fetched).
pub const OK: u8 = 0;
/// wal-push: failed, PostgreSQL will retry. wal-fetch: not in the archive
/// (or, in standby mode, any failure: fall back to streaming).
pub const FAILED: u8 = 1;
/// Bad arguments or settings.
pub const USAGE: u8 = 2;
/// wal-push refused: different content already archived under the name,
/// WAL of another database system, or a file that is not what its name says.
pub const REFUSED: u8 = 3;
/// wal-fetch failed for a reason other than "not found" outside standby
/// mode: above 125, so PostgreSQL stops recovery instead of promoting early.
pub const FETCH_FATAL: u8 = 255;
