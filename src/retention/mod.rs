//! Retention: Barman's policies (`policy`), the verdict on each backup
//! (`classify`), the WAL the remaining backups need (`wal_needed`), and
//! `pitr expire`, which applies them (`delete`). See docs/retention.md.

pub mod classify;
pub mod delete;
pub mod policy;
pub mod preview;
pub mod wal_needed;

pub use classify::{Reason, RetentionStatus, Verdict};
pub use delete::{expire, ExpireReport, ExpireRequest};
pub use policy::RetentionPolicy;
pub use preview::{preview, RetentionPreview};
