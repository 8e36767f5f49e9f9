//! `pitr backup` and its catalog commands: list, show, delete, verify, keep.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use tracing::{error, info};

use super::backup_output::{print_entry, print_list, Format};
use super::exit;
use super::expire::{run_policy, ExpireOptions};
use super::progress::Reporter;
use super::repo_args::RepoArgs;
use pitr::backup::keep::{self, KeepTarget};
use pitr::backup::take::{take, BackupRequest};
use pitr::backup::{catalog, verify, BackupId};
use pitr::config::redact;
use pitr::error::{Error, Result};
use pitr::pgwire::{Checkpoint, ConnectParams};
use pitr::repo::Repo;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub action: Option<BackupAction>,

    #[command(flatten)]
    pub take: TakeArgs,
}

#[derive(Debug, Args)]
pub struct TakeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    /// A name to find the backup by later (as Barman's --name)
    #[arg(long)]
    pub name: Option<String>,

    /// Checkpoint to start the backup with: fast (at once) or spread
    #[arg(long, value_enum, default_value = "fast")]
    pub checkpoint: CheckpointArg,

    /// Seconds to wait for the backup's last WAL segment to be archived
    #[arg(long, env = "PITR_WAL_TIMEOUT", default_value_t = 120)]
    pub wal_timeout: u64,

    /// Limit the server's send rate, in kB/s (32-1048576), as pg_basebackup -r
    #[arg(long, value_name = "KBPS", value_parser = clap::value_parser!(u32).range(32..=1_048_576))]
    pub max_rate: Option<u32>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CheckpointArg {
    Fast,
    Spread,
}

/// How to reach the server, as PostgreSQL's own tools take it: a connection
/// string, flags, then PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE.
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// Connection string ("host=... port=... user=..." or postgresql://...)
    #[arg(short = 'd', long = "dbname", value_name = "CONNSTR")]
    pub dbname: Option<String>,
    /// Server host or Unix socket directory (default: PGHOST)
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Server port (default: PGPORT, 5432)
    #[arg(short = 'p', long, value_name = "PORT")]
    pub port: Option<u16>,
    /// User name with the REPLICATION attribute (default: PGUSER)
    #[arg(short = 'U', long, value_name = "USER")]
    pub username: Option<String>,
}

impl ConnArgs {
    pub fn to_params(&self) -> Result<ConnectParams> {
        let mut params = ConnectParams::resolve(self.dbname.as_deref())?;
        if let Some(h) = &self.host {
            params.set_host(h);
        }
        if let Some(p) = self.port {
            params.port = p;
        }
        if let Some(u) = &self.username {
            params.user = u.clone();
        }
        Ok(params)
    }
}

#[derive(Debug, Subcommand)]
pub enum BackupAction {
    /// List the backups in the repository
    List(ListArgs),
    /// Show one backup (an id, a name, latest or oldest)
    Show(ShowArgs),
    /// Delete one backup (its WAL stays), or, with --retention-policy,
    /// every backup the policy makes obsolete and the WAL no remaining
    /// backup needs (as barman-cloud-backup-delete -r; same as `pitr expire`)
    Delete(DeleteArgs),
    /// Read a backup back and check every file against the server's manifest
    Verify(ShowArgs),
    /// Keep a backup beyond the retention policy, release it, or show its keep
    /// (stored where barman-cloud-backup-keep stores it)
    Keep(KeepArgs),
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Backup id, name, `latest` or `oldest`
    #[arg(
        required_unless_present = "retention_policy",
        conflicts_with = "retention_policy"
    )]
    pub backup: Option<String>,
    /// Delete what this policy makes obsolete: REDUNDANCY N,
    /// RECOVERY WINDOW OF N DAYS|WEEKS|MONTHS, or Nd / Nw / Nm
    #[arg(short = 'r', long, value_name = "POLICY")]
    pub retention_policy: Option<String>,
    #[command(flatten)]
    pub common: ExpireOptions,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("keep_action").required(true).args(["target", "release", "status"])))]
pub struct KeepArgs {
    /// Backup id, name, `latest` or `oldest`
    pub backup: String,
    /// Keep it: `full` (the backup and all WAL after it) or `standalone`
    /// (the backup and only the WAL it needs to be consistent)
    #[arg(long, value_enum)]
    pub target: Option<KeepTargetArg>,
    /// Release its keep: the retention policy applies to it again
    #[arg(short = 'r', long)]
    pub release: bool,
    /// Print its keep: `Keep: full`, `Keep: standalone` or `Keep: nokeep`
    #[arg(short = 's', long)]
    pub status: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeepTargetArg {
    Full,
    Standalone,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Backup id, name, `latest` or `oldest`
    pub backup: String,
}

/// Opens the repository; `create` for taking a backup (a local directory
/// may not exist yet), never for reading.
fn open(repo: &RepoArgs, create: bool) -> Result<(Repo, Vec<String>)> {
    let cfg = repo.to_config()?;
    let secrets = cfg.secrets();
    let repo = match create {
        true => Repo::create(&cfg)?,
        false => Repo::open(&cfg)?,
    };
    Ok((repo, secrets))
}

fn fail(what: &str, e: &Error, secrets: &[String]) -> u8 {
    error!("{what}: {}", redact(&e.to_string(), secrets));
    exit::for_error(e.kind())
}

pub async fn run(args: BackupArgs, repo: &RepoArgs) -> u8 {
    match args.action {
        Some(action) => run_action(action, repo).await,
        None => run_take(args.take, repo).await,
    }
}

async fn run_take(args: TakeArgs, repo_args: &RepoArgs) -> u8 {
    let (repo, secrets) = match open(repo_args, true) {
        Ok(r) => r,
        Err(e) => return fail("backup", &e, &[]),
    };
    let params = match args.conn.to_params() {
        Ok(p) => p,
        Err(e) => return fail("backup", &e, &secrets),
    };
    let req = BackupRequest {
        name: args.name,
        checkpoint: match args.checkpoint {
            CheckpointArg::Fast => Checkpoint::Fast,
            CheckpointArg::Spread => Checkpoint::Spread,
        },
        wal_timeout: Duration::from_secs(args.wal_timeout),
        max_rate: args.max_rate,
    };
    let progress = Reporter::new();
    let result = take(&repo, &params, &req, &progress).await;
    progress.finish();
    match result {
        Ok(entry) => {
            let i = &entry.info;
            info!(
                "backup {} done: {} to {} on timeline {}, {} bytes stored",
                i.backup_id,
                i.begin_xlog.map(|l| l.to_string()).unwrap_or_default(),
                i.end_xlog.map(|l| l.to_string()).unwrap_or_default(),
                i.timeline.unwrap_or_default(),
                i.size.unwrap_or_default()
            );
            println!("{}", i.backup_id);
            exit::OK
        }
        Err(e) => fail("backup", &e, &secrets),
    }
}

async fn run_action(action: BackupAction, repo_args: &RepoArgs) -> u8 {
    let what = match &action {
        BackupAction::List(_) => "backup list",
        BackupAction::Show(_) => "backup show",
        BackupAction::Delete(_) => "backup delete",
        BackupAction::Verify(_) => "backup verify",
        BackupAction::Keep(_) => "backup keep",
    };
    if let BackupAction::Delete(DeleteArgs {
        retention_policy: Some(policy),
        common,
        ..
    }) = &action
    {
        return run_policy(policy, common, repo_args, what).await;
    }
    let (repo, secrets) = match open(repo_args, false) {
        Ok(r) => r,
        Err(e) => return fail(what, &e, &[]),
    };
    let result: Result<u8> = async {
        match &action {
            BackupAction::List(a) => {
                print_list(&catalog::list(&repo).await?, a.format);
                Ok(exit::OK)
            }
            BackupAction::Show(a) => {
                print_entry(&catalog::resolve(&repo, &a.backup).await?, a.format);
                Ok(exit::OK)
            }
            BackupAction::Delete(a) => {
                let spec = a.backup.as_deref().unwrap_or_default();
                let id = match catalog::resolve(&repo, spec).await {
                    Ok(e) => e.info.backup_id,
                    // A delete cut short leaves no backup.info: allow the id.
                    Err(_) => spec.parse::<BackupId>()?,
                };
                keep::refuse_if_kept(&repo, &id).await?;
                let minimum = a.common.minimum_redundancy as usize;
                if minimum > 0 {
                    let done = catalog::list(&repo)
                        .await?
                        .iter()
                        .filter(|e| e.usable())
                        .count();
                    if minimum >= done {
                        return Err(Error::Conflict(format!(
                            "not deleting backup {id}: the minimum redundancy is {minimum} and \
                             the repository holds {done} usable backups"
                        )));
                    }
                }
                if a.common.dry_run {
                    println!("would delete backup {id}");
                    return Ok(exit::OK);
                }
                let keys = catalog::delete(&repo, &id).await?;
                info!(
                    "deleted backup {id} ({} objects; its WAL is kept)",
                    keys.len()
                );
                Ok(exit::OK)
            }
            BackupAction::Keep(a) => {
                let id = catalog::resolve(&repo, &a.backup).await?.info.backup_id;
                if a.status {
                    let target = keep::get(&repo, &id).await?;
                    println!(
                        "Keep: {}",
                        target.map(KeepTarget::as_str).unwrap_or("nokeep")
                    );
                } else if a.release {
                    if keep::release(&repo, &id).await? {
                        info!(
                            "backup {id}: keep released; the retention policy applies to it again"
                        );
                    } else {
                        info!("backup {id} had no keep");
                    }
                } else if let Some(t) = a.target {
                    let target = match t {
                        KeepTargetArg::Full => KeepTarget::Full,
                        KeepTargetArg::Standalone => KeepTarget::Standalone,
                    };
                    keep::set(&repo, &id, target).await?;
                    info!("backup {id} kept (target {target})");
                }
                Ok(exit::OK)
            }
            BackupAction::Verify(a) => {
                let entry = catalog::resolve(&repo, &a.backup).await?;
                let report = verify::verify(&repo, &entry).await?;
                for p in &report.problems {
                    error!("backup {}: {p}", entry.info.backup_id);
                }
                if report.problems.is_empty() {
                    info!(
                        "backup {} verified: {} files, {} bytes match the server's manifest",
                        entry.info.backup_id, report.files_checked, report.bytes
                    );
                    println!("OK {} {} files", entry.info.backup_id, report.files_checked);
                    Ok(exit::OK)
                } else {
                    println!(
                        "FAILED {} {} problems",
                        entry.info.backup_id,
                        report.problems.len()
                    );
                    Ok(exit::REFUSED)
                }
            }
        }
    }
    .await;
    result.unwrap_or_else(|e| fail(what, &e, &secrets))
}
