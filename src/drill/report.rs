//! What a drill found: the report it prints and writes, and the state
//! record `status` and `metrics` read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// `connects`, `recovery-finished`, `target-reached`, `amcheck`, or
    /// the path of a `--check` file.
    pub name: String,
    pub passed: bool,
    /// Why it failed, or what it saw.
    pub detail: String,
}

/// The stage a drill got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Plan,
    Restore,
    Start,
    Recovery,
    Checks,
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillReport {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Whether every check passed (and every stage before them).
    pub passed: bool,
    /// The stage the drill reached; not `done` when it failed before the
    /// checks (the plan found a gap, the server did not start, ...).
    pub stage: Stage,
    /// Why the drill stopped before its checks, if it did.
    pub error: Option<String>,
    pub backup_id: Option<String>,
    /// The recovery target, in words.
    pub target: String,
    /// Seconds from the start of the drill until the restored server
    /// accepted connections as a primary: the recovery time objective
    /// this repository meets on this machine.
    pub rto_seconds: Option<f64>,
    /// The last transaction the restored server replayed.
    pub last_replayed_commit: Option<DateTime<Utc>>,
    /// Seconds between the reference point (the target time, or for any
    /// other target the start of the drill) and the last replayed commit:
    /// the data a restore to that point would lack (RPO at the target).
    pub rpo_seconds: Option<f64>,
    pub checks: Vec<CheckResult>,
    /// Where the restored copy was (removed afterwards unless `--keep`).
    pub scratch: String,
}

impl DrillReport {
    /// The names of the checks that failed.
    pub fn failed_checks(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// One line for logs and the terminal.
    pub fn summary(&self) -> String {
        let rto = self
            .rto_seconds
            .map(|s| format!(", RTO {s:.1} s"))
            .unwrap_or_default();
        let rpo = self
            .rpo_seconds
            .map(|s| format!(", data lag {s:.1} s at the target"))
            .unwrap_or_default();
        match (&self.error, self.passed) {
            (Some(e), _) => format!("drill FAILED at {:?}: {e}", self.stage),
            (None, true) => format!(
                "drill passed: backup {} to {}{rto}{rpo}, {} checks",
                self.backup_id.as_deref().unwrap_or("-"),
                self.target,
                self.checks.len()
            ),
            (None, false) => format!(
                "drill FAILED: checks {} failed (backup {} to {}{rto})",
                self.failed_checks().join(", "),
                self.backup_id.as_deref().unwrap_or("-"),
                self.target
            ),
        }
    }
}

/// The Drill state record (`<server>/pitr/state/drill.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub finished_at: DateTime<Utc>,
    pub passed: bool,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    pub backup_id: Option<String>,
    pub target: String,
    pub failed_checks: Vec<String>,
    pub error: Option<String>,
}

impl From<&DrillReport> for DrillRecord {
    fn from(r: &DrillReport) -> Self {
        DrillRecord {
            finished_at: r.finished_at,
            passed: r.passed,
            rto_seconds: r.rto_seconds,
            rpo_seconds: r.rpo_seconds,
            backup_id: r.backup_id.clone(),
            target: r.target.clone(),
            failed_checks: r.failed_checks().iter().map(|s| s.to_string()).collect(),
            error: r.error.clone(),
        }
    }
}
