//! Base backups: ids, Barman's backup.info, the catalog in the repository,
//! and taking a backup over the replication protocol.

pub(crate) mod abandoned;
pub mod catalog;
pub mod id;
pub mod info;
pub mod keep;
pub mod label_capture;
pub mod outcome;
pub mod pyrepr;
pub mod request;
mod stream_upload;
pub mod take;
pub mod verify;
pub mod wal_check;

pub use id::BackupId;
pub use info::{BackupInfo, BackupStatus, Tablespace};
