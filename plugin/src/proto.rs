//! The CNPG-I messages and services, generated from `proto/` by build.rs.
//! Package names follow CNPG-I: `restore_job.proto` lives in
//! `cnpgi.wal.v1` beside WAL.

#![allow(clippy::all, missing_docs)]

pub mod identity {
    tonic::include_proto!("cnpgi.identity.v1");
}

pub mod wal {
    tonic::include_proto!("cnpgi.wal.v1");
}

pub mod backup {
    tonic::include_proto!("cnpgi.backup.v1");
}

pub mod lifecycle {
    tonic::include_proto!("cnpgi.operator_lifecycle.v1");
}

pub mod metrics {
    tonic::include_proto!("cnpgi.metrics.v1");
}
