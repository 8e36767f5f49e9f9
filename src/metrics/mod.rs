//! Prometheus metrics for one or more servers' repositories: `pitr
//! metrics` prints them, `pitr metrics --listen` serves them, and the
//! CNPG-I sidecar's Metrics service answers with the same families.
//!
//! - [`gather`] reads what the metrics are made of, cheaply: the state
//!   records (`crate::state`), the status (`crate::status`: the newest
//!   hash directory and the catalog), and, given the PGDATA, the local
//!   archive counters and the `.ready` backlog. It never fails: an
//!   unreachable store is a metric, and the last values read stay.
//! - [`families`] is the one list of metric names, types, help and labels,
//!   and the samples a snapshot gives them.
//! - [`exposition`] encodes samples in Prometheus's text format with the
//!   `prometheus-client` crate.
//! - [`records`] are the fields read from the Verify, Expire and Drill
//!   state records, which other commands write.

pub mod exposition;
pub mod families;
pub mod gather;
pub mod records;

pub use families::{samples, Def, Kind, Sample, DEFS};
pub use gather::{gather, Snapshot};
