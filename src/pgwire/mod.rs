//! A small client for PostgreSQL's replication protocol.
//!
//! tokio-postgres cannot open replication connections, so pitr speaks the
//! protocol itself, with `postgres-protocol` for message encoding and
//! SCRAM, over a TCP or Unix socket. No TLS.
//!
//! - [`conninfo`]: connection settings from a connection string, the libpq
//!   environment and the defaults.
//! - `framing`: the byte stream and message framing (notices, parameter
//!   status, server errors).
//! - `auth`: startup and authentication (trust, password, md5,
//!   SCRAM-SHA-256).
//! - [`replication`]: the connection, IDENTIFY_SYSTEM, SHOW and friends.
//! - [`base_backup`]: BASE_BACKUP streamed as [`BackupEvent`]s.
//!
//! ```no_run
//! # async fn f() -> pitr::Result<()> {
//! use pitr::pgwire::{BackupEvent, BaseBackupOptions, ConnectParams, ReplicationConnection};
//! let params = ConnectParams::resolve(Some("host=/var/run/postgresql user=postgres"))?;
//! let mut conn = ReplicationConnection::connect(&params).await?;
//! let system = conn.identify_system().await?;
//! let mut backup = conn.base_backup(&BaseBackupOptions::new("nightly")).await?;
//! while let Some(event) = backup.next().await? {
//!     if let BackupEvent::Data(bytes) = event { /* write to the store */ }
//! }
//! # Ok(()) }
//! ```

mod auth;
pub mod base_backup;
pub mod conninfo;
mod framing;
pub mod replication;

pub use base_backup::{
    BackupEvent, BaseBackupOptions, BaseBackupStream, Checkpoint, TablespaceInfo,
};
pub use conninfo::{ConnectParams, Host};
pub use replication::{parse_server_version, IdentifySystem, ReplicationConnection};
