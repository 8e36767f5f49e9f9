//! `pitr restore`: plan (and with --dry-run only plan) a point-in-time
//! recovery, then carry it out into an empty data directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use tracing::{error, info};

use super::backup_output::Format;
use super::exit;
use super::progress::Reporter;
use super::repo_args::RepoArgs;
use super::target_args::TargetArgs;
use pitr::config::redact;
use pitr::error::{Error, Result};
use pitr::repo::Repo;
use pitr::restore::execute::{execute, ExecuteRequest};
use pitr::restore::{plan, Plan, PlanRequest, TargetAction};

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Data directory to restore into (must be empty or new)
    #[arg(long, short = 'D', env = "PGDATA", value_name = "DIR")]
    pub pgdata: PathBuf,

    #[command(flatten)]
    pub target: TargetArgs,
    /// What the server does at the target
    #[arg(long, value_enum, default_value = "promote")]
    pub target_action: ActionArg,
    /// Put tablespace OID in DIR instead of its original location (repeatable)
    #[arg(long, value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,
    /// Keep pg_wal in DIR (an empty directory, e.g. its own volume), linked
    /// from PGDATA, as initdb --waldir does
    #[arg(long, value_name = "DIR")]
    pub waldir: Option<PathBuf>,
    /// Ranged GETs in flight per tar: a large tar downloads this many
    /// 8 MiB ranges at once, about (N + 2) x 8 MiB of memory per tar
    /// (1: one range at a time)
    #[arg(long, env = "PITR_RESTORE_JOBS", default_value_t = pitr::restore::execute::DEFAULT_JOBS as u32,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,

    /// Print the plan and touch nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Replace the content of a non-empty PGDATA (tablespace directories must be empty)
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ActionArg {
    Pause,
    Promote,
    Shutdown,
}

impl RestoreArgs {
    fn tablespace_map(&self) -> Result<BTreeMap<u32, PathBuf>> {
        self.tablespace_map
            .iter()
            .map(|m| {
                let (oid, dir) = m
                    .split_once('=')
                    .and_then(|(o, d)| Some((o.parse::<u32>().ok()?, PathBuf::from(d))))
                    .filter(|(_, d)| d.is_absolute())
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "--tablespace-map '{m}' is not OID=/absolute/dir (see `pitr backup show` for oids)"
                        ))
                    })?;
                Ok((oid, dir))
            })
            .collect()
    }

    /// The restore_command that reaches this repository the way this run
    /// does: the same binary and the same non-secret settings as flags.
    /// Credentials stay in the environment or the settings file.
    pub fn restore_command(repo: &RepoArgs, config: Option<&Path>) -> String {
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "pitr".into());
        let mut parts = vec![shell_quote(&exe)];
        if let Some(config) = config {
            let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
            parts.push(format!(
                "--config {}",
                shell_quote(&config.display().to_string())
            ));
        }
        parts.push("wal-fetch".into());
        parts.extend(repo.fetch_args().iter().map(|a| shell_quote(a)));
        parts.push("%f %p".into());
        parts.join(" ")
    }
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@,+".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn print_plan(p: &Plan, format: Format) {
    if let Format::Json = format {
        println!(
            "{}",
            serde_json::to_string_pretty(p).expect("plan serialises")
        );
        return;
    }
    let b = &p.backup.info;
    println!("Restore plan");
    println!(
        "  backup          {}{}, ended {} at {} on timeline {}",
        b.backup_id,
        b.backup_name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        b.end_time.map(|t| t.to_rfc3339()).unwrap_or_default(),
        b.end_xlog.map(|l| l.to_string()).unwrap_or_default(),
        b.timeline.unwrap_or(0)
    );
    println!(
        "  target          {}{}",
        p.target,
        if p.exclusive { ", exclusive" } else { "" }
    );
    let path: Vec<String> = p
        .timeline_path
        .iter()
        .map(|(t, end)| match end {
            Some(e) => format!("{} (until {e})", t.get()),
            None => t.get().to_string(),
        })
        .collect();
    println!("  timelines       {}", path.join(" -> "));
    println!(
        "  WAL             {} .. {} ({} segments, {} bytes stored), no gaps",
        p.first_segment().map(|s| s.to_string()).unwrap_or_default(),
        p.last_segment().map(|s| s.to_string()).unwrap_or_default(),
        p.segments.len(),
        p.wal_bytes
    );
    println!(
        "  download        {} bytes of backup, {} bytes of WAL",
        p.backup_bytes, p.wal_bytes
    );
    println!("  reached by      {}", p.reached_by);
    println!("  then            {}", p.action.as_str());
    for n in &p.notes {
        println!("  note            {n}");
    }
}

fn fail(e: &Error, secrets: &[String]) -> u8 {
    error!("restore: {}", redact(&e.to_string(), secrets));
    exit::for_error(e.kind())
}

pub async fn run(args: RestoreArgs, repo_args: &RepoArgs, config: Option<&Path>) -> u8 {
    let cfg = match repo_args.to_config() {
        Ok(c) => c,
        Err(e) => return fail(&e, &[]),
    };
    let secrets = cfg.secrets();
    let result = async {
        let repo = Repo::open(&cfg)?;
        let req = PlanRequest {
            action: match args.target_action {
                ActionArg::Pause => TargetAction::Pause,
                ActionArg::Promote => TargetAction::Promote,
                ActionArg::Shutdown => TargetAction::Shutdown,
            },
            ..args.target.request()?
        };
        let tablespace_map = args.tablespace_map()?;
        let p = plan(&repo, &req).await?;
        print_plan(&p, args.format);
        if args.dry_run {
            return Ok(());
        }
        let progress = Reporter::new();
        let exec = ExecuteRequest {
            pgdata: std::path::absolute(&args.pgdata).unwrap_or(args.pgdata.clone()),
            force: args.force,
            tablespace_map,
            restore_command: Some(RestoreArgs::restore_command(repo_args, config)),
            timeline: req.timeline,
            wal_dir: args
                .waldir
                .as_ref()
                .map(|d| std::path::absolute(d).unwrap_or(d.clone())),
            jobs: args.jobs as usize,
        };
        let report = execute(&repo, &p, &exec, &progress).await;
        progress.finish();
        let report = report?;
        info!(
            "restored backup {} into {}: {} files, {} bytes",
            p.backup.info.backup_id,
            exec.pgdata.display(),
            report.files,
            report.bytes
        );
        for (oid, dir) in &report.tablespaces {
            info!("tablespace {oid} restored into {}", dir.display());
        }
        info!(
            "recovery settings appended to {}",
            report.settings_file.display()
        );
        if cfg.s3.credentials.is_some() && std::env::var_os("PITR_CONFIG").is_none() {
            info!(
                "the server's restore_command needs S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY in \
                 its environment (or a settings file: pitr --config FILE)"
            );
        }
        println!(
            "Restored. Start the server as the PostgreSQL OS user: pg_ctl -D {} start\n\
             It replays WAL through pitr wal-fetch to {}, then does: {}.",
            exec.pgdata.display(),
            p.target,
            p.action.as_str()
        );
        Ok::<_, Error>(())
    }
    .await;
    match result {
        Ok(()) => exit::OK,
        Err(e) => fail(&e, &secrets),
    }
}
