//! `pitr drill`: restore into scratch, start it, check it, report, clean up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tracing::{error, info, warn};

use super::backup_output::Format;
use super::exit;
use super::progress::Reporter;
use super::repo_args::RepoArgs;
use super::restore::RestoreArgs;
use super::target_args::TargetArgs;
use pitr::config::redact;
use pitr::drill::{self, DrillRequest};
use pitr::error::{Error, Result};
use pitr::repo::Repo;

#[derive(Debug, Args)]
pub struct DrillArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Restore into DIR (empty or new; default: a new directory under $TMPDIR)
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// PostgreSQL's bin directory for the backup's version (default
    /// /usr/lib/postgresql/<major>/bin)
    #[arg(long, env = "PITR_PG_BIN", value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// The database role the checks connect as
    #[arg(long, env = "PITR_DRILL_USER", default_value = "postgres")]
    pub pg_user: String,
    /// An SQL file whose queries must all return true (repeatable; see sql/drill/)
    #[arg(long = "check", value_name = "FILE")]
    pub checks: Vec<PathBuf>,
    /// Write the JSON report to FILE
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Seconds recovery may take before the drill fails
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// Keep the restored copy (stopped) instead of removing it
    #[arg(long)]
    pub keep: bool,
    /// Ranged GETs in flight per tar (as for restore)
    #[arg(long, env = "PITR_RESTORE_JOBS", default_value_t = pitr::restore::execute::DEFAULT_JOBS as u32,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Print the report as text or JSON
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

fn scratch_dir(given: &Option<PathBuf>) -> Result<(PathBuf, bool)> {
    if let Some(d) = given {
        return Ok((std::path::absolute(d).unwrap_or(d.clone()), false));
    }
    let mut rnd = [0u8; 4];
    let _ = getrandom::fill(&mut rnd);
    let dir = std::env::temp_dir().join(format!("pitr-drill-{}", hex::encode(rnd)));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    Ok((dir, true))
}

fn write_report(path: &Path, json: &str) -> Result<()> {
    std::fs::write(path, json).map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

pub async fn run(args: DrillArgs, repo_args: &RepoArgs, config: Option<&Path>) -> u8 {
    let mut secrets = Vec::new();
    let result = async {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return Err(Error::Config(
                "pitr drill starts PostgreSQL, which refuses to run as root: run the drill as \
                 the PostgreSQL OS user (sudo -u postgres pitr drill ...)"
                    .into(),
            ));
        }
        let cfg = repo_args.to_config()?;
        secrets = cfg.secrets();
        let repo = Repo::open(&cfg)?;
        let (scratch, scratch_is_ours) = scratch_dir(&args.scratch)?;
        let req = DrillRequest {
            plan: args.target.request()?,
            scratch,
            scratch_is_ours,
            pg_bin: args.pg_bin.clone(),
            pg_user: args.pg_user.clone(),
            checks: args
                .checks
                .iter()
                .map(|c| std::path::absolute(c).unwrap_or(c.clone()))
                .collect(),
            restore_command: RestoreArgs::restore_command(repo_args, config),
            timeout: Duration::from_secs(args.timeout),
            keep: args.keep,
            jobs: args.jobs as usize,
        };
        for c in &req.checks {
            if !c.is_file() {
                return Err(Error::Config(format!(
                    "--check {}: no such file",
                    c.display()
                )));
            }
        }
        let progress = Reporter::new();
        let report = drill::drill(&repo, &req, &progress).await;
        progress.finish();
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                if req.scratch_is_ours {
                    let _ = std::fs::remove_dir_all(&req.scratch);
                }
                return Err(e);
            }
        };
        if let Err(e) = drill::record(&repo, &report).await {
            warn!(
                "drill: cannot record the result in the repository: {}",
                redact(&e.to_string(), &secrets)
            );
        }
        Ok(report)
    }
    .await;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            error!("drill: {}", redact(&e.to_string(), &secrets));
            return exit::for_error(e.kind());
        }
    };
    let json = serde_json::to_string_pretty(&report).expect("report serialises");
    if let Some(path) = &args.report {
        if let Err(e) = write_report(path, &json) {
            error!("drill: {e}");
        }
    }
    match args.format {
        Format::Json => println!("{json}"),
        Format::Text => {
            for c in &report.checks {
                println!(
                    "{} {:<20} {}",
                    if c.passed { "OK  " } else { "FAIL" },
                    c.name,
                    c.detail
                );
            }
            println!("{}", redact(&report.summary(), &secrets));
        }
    }
    match report.passed {
        true => {
            info!("{}", report.summary());
            exit::OK
        }
        false => {
            error!("{}", redact(&report.summary(), &secrets));
            exit::FAILED
        }
    }
}
