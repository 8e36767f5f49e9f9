//! `pitr wal-push PATH`: archive the file PostgreSQL asks for, and push the
//! next files it has marked ready at the same time (look-ahead), so that
//! its next calls find them stored and answer at once.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tracing::{debug, error, info, warn};

use super::exit;
use super::repo_args::RepoArgs;
use pitr::config::redact;
use pitr::fsutil::parent_dir;
use pitr::repo::Repo;
use pitr::wal::archive_stats::{self, ArchiveOutcome};
use pitr::wal::lookahead::{push_ahead, push_one, ready_files, Markers};
use pitr::wal::push::PushOutcome;
use pitr::wal::{prefetch, WalFileName};

#[derive(Debug, Args)]
pub struct WalPushArgs {
    /// Files pushed at once: PATH plus the next ones PostgreSQL marked
    /// ready in pg_wal/archive_status (1 turns look-ahead off)
    #[arg(long, env = "PITR_ARCHIVE_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub archive_concurrency: u32,

    /// At most this many MiB of files pushed ahead in one call
    #[arg(long, env = "PITR_ARCHIVE_AHEAD_MIB", default_value_t = 256)]
    pub archive_ahead_mib: u64,

    /// Seconds to let files pushed ahead finish once PATH is stored (the
    /// rest is pushed when PostgreSQL asks for it)
    #[arg(long, env = "PITR_ARCHIVE_AHEAD_WAIT", default_value_t = 30)]
    pub archive_ahead_wait: u64,

    /// Seconds between uploads of the archive counters (the Archive state
    /// record) at most; a change between failing and succeeding is
    /// uploaded at once. They are counted in pg_wal/.pitr-state/ each call.
    #[arg(long, env = "PITR_ARCHIVE_STATE_INTERVAL", default_value_t = 60)]
    pub archive_state_interval: u64,

    /// The WAL file to archive (%p in archive_command)
    pub path: PathBuf,
}

pub async fn run(args: WalPushArgs, repo_args: &RepoArgs) -> u8 {
    let mut secrets = Vec::new();
    let shown = args.path.display().to_string();
    let stats_interval = Duration::from_secs(args.archive_state_interval);
    let mut counted = false;
    let result = async {
        let cfg = repo_args.to_config()?;
        secrets = cfg.secrets();
        let repo = Repo::create(&cfg)?;
        let pg_wal = parent_dir(&args.path).to_path_buf();
        let markers = Markers::new(&pg_wal, &repo.describe());
        let ahead = match args.path.file_name().and_then(|n| n.to_str()) {
            Some(n) if args.archive_concurrency > 1 => match n.parse::<WalFileName>() {
                Ok(name) => ready_files(
                    &pg_wal,
                    &name,
                    args.archive_concurrency as usize - 1,
                    args.archive_ahead_mib << 20,
                    &markers,
                ),
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        };
        let primary = push_one(&repo, &markers, &args.path);
        let pushing_ahead = push_ahead(
            &repo,
            &markers,
            ahead,
            args.archive_concurrency as usize - 1,
        );
        tokio::pin!(primary, pushing_ahead);
        let mut ahead_results = None;
        let result = loop {
            tokio::select! {
                r = &mut primary => break r,
                r = &mut pushing_ahead, if ahead_results.is_none() => ahead_results = Some(r),
            }
        };
        if result.is_ok() && ahead_results.is_none() {
            let wait = Duration::from_secs(args.archive_ahead_wait);
            ahead_results = tokio::time::timeout(wait, &mut pushing_ahead).await.ok();
            if ahead_results.is_none() {
                debug!("wal-push {shown}: look-ahead pushes still running after {wait:?}: left to later calls");
            }
        }
        for r in ahead_results.unwrap_or_default() {
            match r.result {
                Ok(PushOutcome::Stored { key, .. }) => {
                    info!("wal-push {shown}: pushed ahead {} as {key}", r.path.display())
                }
                Ok(PushOutcome::AlreadyArchived { .. }) => {}
                Err(e) => warn!(
                    "wal-push {shown}: pushing {} ahead failed (it is pushed again when \
                     PostgreSQL asks for it): {}",
                    r.path.display(),
                    redact(&e.to_string(), &secrets)
                ),
            }
        }
        markers.prune(&pg_wal);
        let outcome = ArchiveOutcome {
            path: &args.path,
            ok: result.is_ok(),
        };
        archive_stats::note(Some(&repo), outcome, stats_interval).await;
        counted = true;
        result
    }
    .await;
    if !counted {
        // Failed before the repository was open: counted locally only.
        let outcome = ArchiveOutcome {
            path: &args.path,
            ok: false,
        };
        archive_stats::note(None, outcome, stats_interval).await;
    }
    // A server that archives has finished recovery: a prefetch spool left
    // from it (PostgreSQL asks for the last segment again at the end) goes.
    let spool = prefetch::spool_dir(&args.path);
    if result.is_ok() && spool.exists() {
        prefetch::clear(&spool);
    }
    match result {
        Ok(PushOutcome::Stored {
            key,
            plain_size,
            stored_size,
            ..
        }) => {
            info!("wal-push {shown}: stored as {key} ({plain_size} bytes, {stored_size} stored)");
            exit::OK
        }
        Ok(PushOutcome::AlreadyArchived { key, .. }) => {
            info!("wal-push {shown}: already archived as {key} with the same content");
            exit::OK
        }
        Err(e) => {
            error!("wal-push {shown}: {}", redact(&e.to_string(), &secrets));
            exit::for_error(e.kind())
        }
    }
}
