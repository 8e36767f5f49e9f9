//! `pitr drill`: proves that a repository restores. It plans a restore
//! (the latest backup, or the one a target needs), restores it into a
//! scratch directory, starts a throw-away PostgreSQL on it
//! ([`server::ScratchServer`]), waits until recovery finished and the copy
//! is a primary, runs the checks, measures the time to a usable server
//! (RTO) and the data lag at the target, stops the server, removes the
//! copy (unless asked to keep it), and records the result in the Drill
//! state record for `status` and `metrics`.

pub mod checks;
pub mod report;
pub mod server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::backup::request::Progress;
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::restore::execute::{execute, ExecuteRequest};
use crate::restore::{plan, PlanRequest, Target};
use crate::state::{self, StateKind};
use report::{CheckResult, DrillRecord, DrillReport, Stage};
use server::ScratchServer;

#[derive(Debug, Clone)]
pub struct DrillRequest {
    pub plan: PlanRequest,
    /// Where the copy goes: an empty or new directory.
    pub scratch: PathBuf,
    /// Whether the drill made `scratch` itself (then it removes it whole).
    pub scratch_is_ours: bool,
    /// PostgreSQL's binaries; `None`: `/usr/lib/postgresql/<major>/bin`
    /// for the backup's version.
    pub pg_bin: Option<PathBuf>,
    /// The database role checks connect as.
    pub pg_user: String,
    /// SQL files whose queries must return true.
    pub checks: Vec<PathBuf>,
    /// The restore_command the copy recovers with.
    pub restore_command: String,
    /// The longest recovery may take.
    pub timeout: Duration,
    /// Keep the copy (stopped) instead of removing it.
    pub keep: bool,
    /// Ranged GETs per tar.
    pub jobs: usize,
}

/// The binaries for a backup of server version `version` (150018 -> 15).
pub fn default_pg_bin(version: Option<u32>) -> Option<PathBuf> {
    let major = version? / 10000;
    Some(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")))
}

/// Runs the drill. `Err` only for a request that cannot start (a scratch
/// directory that is not empty, PostgreSQL binaries that are missing);
/// everything after that, including a plan that fails (a gap), is a
/// report with `passed: false`.
pub async fn drill(
    repo: &Repo,
    req: &DrillRequest,
    progress: &dyn Progress,
) -> Result<DrillReport> {
    let started = Instant::now();
    let mut report = DrillReport {
        started_at: Utc::now(),
        finished_at: Utc::now(),
        passed: false,
        stage: Stage::Plan,
        error: None,
        backup_id: None,
        target: req.plan.target.to_string(),
        rto_seconds: None,
        last_replayed_commit: None,
        rpo_seconds: None,
        checks: Vec::new(),
        scratch: req.scratch.display().to_string(),
    };
    if let Some(bin) = &req.pg_bin {
        check_bin(bin)?;
    }
    let not_empty = std::fs::read_dir(&req.scratch)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if not_empty {
        return Err(Error::Config(format!(
            "the scratch directory {} is not empty: give --scratch an empty or new directory \
             (a drill never restores over anything)",
            req.scratch.display()
        )));
    }
    progress.phase("planning");
    let plan = match plan(repo, &req.plan).await {
        Ok(p) => p,
        Err(e) => return Ok(finish(report, Some(e))),
    };
    report.backup_id = Some(plan.backup.info.backup_id.to_string());
    let bin = match req
        .pg_bin
        .clone()
        .or_else(|| default_pg_bin(plan.backup.info.version))
    {
        Some(b) => b,
        None => {
            return Err(Error::Config(
                "the backup does not record its PostgreSQL version: give --pg-bin DIR".into(),
            ))
        }
    };
    check_bin(&bin)?;

    report.stage = Stage::Restore;
    progress.phase("restoring");
    let pgdata = req.scratch.join("pgdata");
    let tablespace_map = plan
        .backup
        .info
        .tablespaces
        .iter()
        .map(|t| (t.oid, req.scratch.join(format!("tablespace-{}", t.oid))))
        .collect();
    let exec = ExecuteRequest {
        pgdata: pgdata.clone(),
        force: false,
        tablespace_map,
        restore_command: Some(req.restore_command.clone()),
        timeline: req.plan.timeline,
        wal_dir: None,
        jobs: req.jobs,
    };
    if let Err(e) = execute(repo, &plan, &exec, progress).await {
        if !req.keep {
            remove_copy(req);
        }
        return Ok(finish(report, Some(e)));
    }

    report.stage = Stage::Start;
    progress.phase("starting the restored copy");
    let mut server = match ScratchServer::prepare(&bin, &pgdata, &req.scratch, &req.pg_user) {
        Ok(s) => s,
        Err(e) => return Ok(finish(report, Some(e))),
    };
    let outcome = run_server(&mut server, req, &mut report, started).await;
    server.stop().await;
    if !req.keep {
        remove_copy(req);
    }
    Ok(finish(report, outcome.err()))
}

async fn run_server(
    server: &mut ScratchServer,
    req: &DrillRequest,
    report: &mut DrillReport,
    started: Instant,
) -> Result<()> {
    server.start().await?;
    report.stage = Stage::Recovery;
    server.wait_primary(req.timeout).await?;
    report.rto_seconds = Some(started.elapsed().as_secs_f64());
    report.checks.push(CheckResult {
        name: "connects".into(),
        passed: true,
        detail: "the copy accepts connections as a primary".into(),
    });

    report.stage = Stage::Checks;
    let replayed = server
        .psql(&[
            "-c",
            "select extract(epoch from pg_last_xact_replay_timestamp())",
        ])
        .await?;
    report.last_replayed_commit = replayed
        .stdout
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp_millis((s * 1000.0) as i64));
    let reference = match &req.plan.target {
        Target::Time { time, .. } => time.with_timezone(&Utc),
        _ => report.started_at,
    };
    report.rpo_seconds = report
        .last_replayed_commit
        .map(|c| ((reference - c).num_milliseconds() as f64 / 1000.0).max(0.0));
    report
        .checks
        .push(checks::target_reached(&req.plan.target, &server.log()));
    if let Some(r) = checks::amcheck(server).await {
        report.checks.push(r);
    }
    for f in &req.checks {
        report.checks.push(checks::check_file(server, f).await);
    }
    report.stage = Stage::Done;
    Ok(())
}

fn finish(mut report: DrillReport, error: Option<Error>) -> DrillReport {
    report.finished_at = Utc::now();
    report.passed = error.is_none() && report.checks.iter().all(|c| c.passed);
    report.error = error.map(|e| e.to_string());
    report
}

fn check_bin(bin: &Path) -> Result<()> {
    for tool in ["pg_ctl", "postgres", "psql"] {
        if !bin.join(tool).exists() {
            return Err(Error::Config(format!(
                "{} has no {tool}: give --pg-bin the bin directory of the backup's PostgreSQL \
                 major version (Debian: apt-get install postgresql-<major>)",
                bin.display()
            )));
        }
    }
    Ok(())
}

/// Removes the copy: the whole scratch directory when the drill made it,
/// otherwise what the drill put in it.
fn remove_copy(req: &DrillRequest) {
    if req.scratch_is_ours {
        let _ = std::fs::remove_dir_all(&req.scratch);
    } else if let Ok(entries) = std::fs::read_dir(&req.scratch) {
        for e in entries.flatten() {
            let _ = std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
        }
    }
}

/// Records `report` as the repository's last drill.
pub async fn record(repo: &Repo, report: &DrillReport) -> Result<()> {
    state::write(repo, StateKind::Drill, &DrillRecord::from(report)).await
}

/// The last drill recorded, if any.
pub async fn last(repo: &Repo) -> Result<Option<DrillRecord>> {
    state::read(repo, StateKind::Drill).await
}
