//! pitr-cnpg: the CNPG-I plugin that lets CloudNativePG archive and restore
//! WAL through pitr. A thin adapter: settings come from the Cluster JSON
//! every call carries, and every decision (push rules, the restore
//! verdict, the repository identity) is the pitr library's.
//!
//! Three roles, one binary: the instance sidecar and the recovery Job's
//! sidecar serve on a Unix socket (`socket.rs`); the operator-side plugin
//! serves sidecar injection over TCP with mutual TLS (`operator_tls.rs`,
//! `lifecycle.rs`).

pub mod backup;
pub mod convert;
pub mod identity;
pub mod lifecycle;
pub mod memory;
pub mod metrics;
pub mod operator_tls;
pub mod proto;
pub mod repos;
pub mod restore_job;
pub mod settings;
pub mod socket;
pub mod status;
pub mod wal;

/// The plugin's name: the socket's file name, the metadata name and the
/// `spec.plugins[].name` users write. DNS-style, at most 63 characters.
pub const PLUGIN_NAME: &str = "pitr.cnpg.io";
