//! Base backups: ids, Barman's backup.info, the catalog in the repository,
//! and taking a backup over the replication protocol.

pub mod catalog;
pub mod id;
pub mod info;
pub mod pyrepr;
pub mod take;
pub mod tar_scan;
pub mod verify;
pub mod wal_check;

pub use id::BackupId;
pub use info::{BackupInfo, BackupStatus, Tablespace};
