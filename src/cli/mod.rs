//! The command line: the only place that knows clap. Each command parses,
//! builds a repository, calls one library function, and reports.

pub mod archive;
pub mod argv_mask;
pub mod backup;
pub mod backup_output;
pub mod check;
pub mod config_file;
pub mod drill;
pub mod exit;
pub mod expire;
pub mod metrics;
pub mod metrics_server;
pub mod progress;
pub mod repo_args;
pub mod restore;
pub mod status;
pub mod target_args;
pub mod wal_fetch;
pub mod wal_prefetch;
pub mod wal_push;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "pitr",
    version,
    about = "PostgreSQL WAL archiving and point-in-time recovery on S3 (Ceph RGW, MinIO, AWS) or a local directory",
    after_help = "Settings come from flags, environment variables (shown with each flag), or a settings \
                  file of KEY=VALUE lines named by --config / PITR_CONFIG."
)]
pub struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, env = "PITR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Settings file of KEY=VALUE lines (PITR_REPO=..., S3_ACCESS_KEY_ID=...),
    /// read before anything else; the environment wins over it.
    #[arg(long, global = true, env = "PITR_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Repository settings: accepted before or after the subcommand.
    #[command(flatten)]
    pub repo: repo_args::RepoArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Archive one WAL file: archive_command = 'pitr wal-push %p'
    WalPush(wal_push::WalPushArgs),
    /// Restore one WAL file: restore_command = 'pitr wal-fetch %f %p'
    WalFetch(wal_fetch::WalFetchArgs),
    /// Download WAL ahead for wal-fetch (started by wal-fetch itself)
    #[command(hide = true)]
    WalPrefetch(wal_prefetch::WalPrefetchArgs),
    /// Take a base backup over the replication protocol, or manage backups
    Backup(Box<backup::BackupArgs>),
    /// Restore a backup and recover to a point in time (time, LSN, xid, name, latest)
    Restore(Box<restore::RestoreArgs>),
    /// Check the WAL archive: `pitr archive verify [--deep] [--full]`
    Archive(archive::ArchiveArgs),
    /// Check the settings, the store and (with -d) PostgreSQL's archiving: one line per check
    Check(check::CheckArgs),
    /// The repository at a glance: last archived segment, backups, recoverability
    Status(status::StatusArgs),
    /// Restore drill: restore into scratch, start it, run checks, report (RTO, data lag)
    Drill(Box<drill::DrillArgs>),
    /// Prometheus metrics of the repository (printed, or served with --listen)
    Metrics(metrics::MetricsArgs),
    /// Apply the retention policy: delete obsolete backups and the WAL no kept backup needs
    Expire(expire::ExpireArgs),
}

/// Runs the parsed command and returns the process exit code.
pub async fn run(cli: Cli) -> u8 {
    let repo = &cli.repo;
    match cli.command {
        Command::WalPush(args) => wal_push::run(args, repo).await,
        Command::WalFetch(args) => wal_fetch::run(args, repo).await,
        Command::WalPrefetch(args) => wal_prefetch::run(args, repo).await,
        Command::Backup(args) => backup::run(*args, repo).await,
        Command::Restore(args) => restore::run(*args, repo, cli.config.as_deref()).await,
        Command::Status(args) => status::run(args, repo).await,
        Command::Drill(args) => drill::run(*args, repo, cli.config.as_deref()).await,
        Command::Metrics(args) => metrics::run(args, repo).await,
        Command::Expire(args) => expire::run(args, repo).await,
        Command::Archive(args) => archive::run(args, repo).await,
        Command::Check(args) => check::run(args, repo).await,
    }
}
