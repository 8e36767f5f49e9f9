//! The Verify state record (`<server>/pitr/state/verify.json`): the last
//! result, for `status`, and the checkpoint that makes the next run
//! incremental.
//!
//! Per timeline it keeps the ranges of segments found and the last key
//! listed (and the last key downloaded and checked by `--deep`); the next
//! run lists each timeline only after that key, so a nightly run reads
//! only what was archived since. History files are re-listed every run
//! (one request) and re-read when their size or time changed. Problems
//! found stay in the record until a full walk no longer finds them (what
//! `--deep` found, until `--deep --full` reads the object again or a full
//! walk finds it deleted).
//!
//! What an incremental run cannot see: an object older than the checkpoint
//! that was deleted or rewritten since. A full walk does (`--full`, and
//! every run once the last full walk is older than `--full-after-days`,
//! 7 by default); `--deep --full` reads every object again.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ranges::Ranges;
use super::report::ObjectProblem;

/// The record's format; another version is ignored (a full walk follows).
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineCheckpoint {
    /// Segment numbers found, as ranges.
    pub ranges: Ranges,
    /// The last key listed on this timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key: Option<String>,
    /// The last key downloaded and verified by `--deep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep_last_key: Option<String>,
}

/// A gap: segment numbers `first..=last` of a timeline are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGap {
    pub timeline: u32,
    pub first: u64,
    pub last: u64,
}

/// A history file as last read: re-read only when the listing shows
/// another size or time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistorySeen {
    pub size: u64,
    pub last_modified: Option<DateTime<Utc>>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyState {
    pub format: u32,
    pub verified_at: DateTime<Utc>,
    /// When every key was last listed.
    pub last_full_at: Option<DateTime<Utc>>,
    /// When every object was last downloaded and verified (`--deep` from
    /// the start).
    #[serde(default)]
    pub last_deep_full_at: Option<DateTime<Utc>>,
    pub healthy: bool,
    pub segment_size: u64,
    /// By timeline id.
    pub timelines: BTreeMap<u32, TimelineCheckpoint>,
    #[serde(default)]
    pub histories: BTreeMap<String, HistorySeen>,
    #[serde(default)]
    pub object_problems: Vec<ObjectProblem>,
    /// One line per history problem, as last found.
    #[serde(default)]
    pub history_problems: Vec<String>,
    /// The gaps last found, for `status`.
    #[serde(default)]
    pub gaps: Vec<StoredGap>,
    /// DONE backups whose own WAL is incomplete.
    #[serde(default)]
    pub incomplete_backups: Vec<String>,
}
