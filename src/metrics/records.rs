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
    /// `archive verify` writes `verified_at`.
    #[serde(default, alias = "verified_at")]
    pub finished_at: Option<DateTime<Utc>>,
    /// `archive verify` writes the gaps themselves (a list); a count is
    /// read too.
    #[serde(default, deserialize_with = "count_or_list")]
    pub gaps: Option<u64>,
}

fn count_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Array(items) => Some(items.len() as u64),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
    })
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

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn the_verify_record_archive_verify_writes_is_read() {
        let written = serde_json::json!({
            "format": 1,
            "verified_at": "2026-12-01T10:00:00Z",
            "healthy": false,
            "gaps": [{"timeline": 1, "first": 5, "last": 6}],
        });
        let r: VerifyRecord = serde_json::from_value(written).unwrap();
        assert_eq!(r.gaps, Some(1));
        assert!(r.finished_at.is_some());
        let by_hand: VerifyRecord = serde_json::from_value(
            serde_json::json!({"finished_at": "2026-12-01T10:00:00Z", "gaps": 3}),
        )
        .unwrap();
        assert_eq!(by_hand.gaps, Some(3));
    }
}
