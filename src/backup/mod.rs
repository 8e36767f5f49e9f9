//! Base backups: ids, Barman's backup.info, the catalog in the repository,
//! and taking a backup over the replication protocol.

pub mod id;
pub mod info;
pub mod pyrepr;

pub use id::BackupId;
pub use info::{BackupInfo, BackupStatus, Tablespace};
