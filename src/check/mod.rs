//! `pitr check`: the one command to run after configuring. Each step is a
//! line: what was checked, OK or FAIL, and on failure the setting to fix.
//! Steps that depend on a failed one are skipped, not failed again.
//!
//! - [`store`]: the store answers with these credentials, the bucket
//!   exists, a test object can be written (with the SSE settings), read and
//!   deleted under `<server>/pitr/`, and the repository's identity.
//! - [`postgres`]: given a connection, the server's identity against the
//!   repository's, `wal_level`, `archive_mode`, `archive_command`, a
//!   replication connection for backups, and archiving end to end (a WAL
//!   switch whose segment must reach the archive).

pub mod postgres;
pub mod store;

use std::time::Duration;

use serde::Serialize;

use crate::config::RepoConfig;
use crate::pgwire::ConnectParams;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Fail,
    /// Not run: a step it needs failed.
    Skip,
}

/// What a line checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Settings,
    Store,
    WriteReadDelete,
    Identity,
    Connection,
    SystemIdentifier,
    WalLevel,
    ArchiveMode,
    ArchiveCommand,
    ArchiveEndToEnd,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Settings => "settings",
            Step::Store => "store",
            Step::WriteReadDelete => "write/read/delete",
            Step::Identity => "identity",
            Step::Connection => "replication connection",
            Step::SystemIdentifier => "system identifier",
            Step::WalLevel => "wal_level",
            Step::ArchiveMode => "archive_mode",
            Step::ArchiveCommand => "archive_command",
            Step::ArchiveEndToEnd => "archiving",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckLine {
    pub step: Step,
    pub status: Status,
    /// What was found (OK), or what failed.
    pub detail: String,
    /// What to change, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl CheckLine {
    pub fn ok(step: Step, detail: impl Into<String>) -> Self {
        CheckLine {
            step,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(step: Step, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        CheckLine {
            step,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn skip(step: Step, why: impl Into<String>) -> Self {
        CheckLine {
            step,
            status: Status::Skip,
            detail: why.into(),
            fix: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub lines: Vec<CheckLine>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.lines.iter().all(|l| l.status != Status::Fail)
    }

    pub fn failed(&self, step: Step) -> bool {
        self.lines
            .iter()
            .any(|l| l.step == step && l.status != Status::Ok)
    }
}

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// How long to wait for the switched segment to reach the archive.
    pub archive_timeout: Duration,
    /// Force a WAL switch and wait for its segment (needs EXECUTE on
    /// pg_switch_wal()).
    pub switch_wal: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            archive_timeout: Duration::from_secs(60),
            switch_wal: true,
        }
    }
}

/// Runs every check for `cfg`, and the PostgreSQL checks given `pg`.
pub async fn check(
    cfg: &RepoConfig,
    pg: Option<&ConnectParams>,
    opts: &CheckOptions,
) -> CheckReport {
    let mut report = CheckReport::default();
    let repo = store::check(cfg, &mut report).await;
    if let Some(params) = pg {
        postgres::check(repo.as_ref(), params, opts, &mut report).await;
    }
    report
}
