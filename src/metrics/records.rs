//! What `metrics` (and `status`) read from the state records that
//! `archive verify`, `expire` and `drill` write. Each struct names only the
//! fields read; a writer may keep more. Every field is optional, so a
//! record written by an older or newer pitr still gives what it has.
//!
//! | record | field | type | meaning |
//! | --- | --- | --- | --- |
//! | `verify.json` | `finished_at` | RFC 3339 time | when the last `archive verify` ended |
//! | `verify.json` | `gaps` | integer | gaps it found in the WAL archive (0: none) |
//! | `expire.json` | `finished_at` | RFC 3339 time | when retention last ran |
//! | `expire.json` | `obsolete_backups` | integer | backups the policy makes obsolete (removed, or to be removed by a dry run) |
//! | `drill.json` | `finished_at` | RFC 3339 time | when the last drill ended |
//! | `drill.json` | `passed` | boolean | whether every check of that drill passed |
//! | `drill.json` | `rto_seconds` | number | seconds from its start to a usable restored server |

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The Verify state record, as read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyRecord {
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub gaps: Option<u64>,
}

/// The Expire state record, as read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpireRecord {
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub obsolete_backups: Option<u64>,
}

/// The Drill state record, as read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub passed: Option<bool>,
    #[serde(default)]
    pub rto_seconds: Option<f64>,
}
