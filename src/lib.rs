//! pitr: PostgreSQL WAL archiving and point-in-time recovery on S3-compatible
//! object stores and local directories, in Barman's object layout.
//!
//! The library never prints and never exits: commands in `main.rs` and
//! `cli/` parse arguments, build a [`repo::Repo`], call one function here,
//! and print the result.

pub mod backup;
pub mod check;
pub mod codec;
pub mod config;
pub mod drill;
pub mod error;
pub mod fault_point;
pub mod fsutil;
pub mod layout;
pub mod metrics;
pub mod pgwire;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod state;
pub mod status;
pub mod store;
pub mod tar_walk;
pub mod transfer;
pub mod verify;
pub mod wal;

pub use error::{Error, ErrorKind, Result};
