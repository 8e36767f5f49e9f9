//! `pitr wal-prefetch` (hidden): started by wal-fetch to download the next
//! segments into the spool while PostgreSQL replays. Never fails loudly:
//! wal-fetch fetches whatever the spool lacks.

use std::path::PathBuf;

use clap::Args;
use tracing::{debug, warn};

use super::exit;
use super::repo_args::RepoArgs;
use pitr::config::redact;
use pitr::repo::Repo;
use pitr::wal::{prefetch, WalFileName};

#[derive(Debug, Args)]
pub struct WalPrefetchArgs {
    #[arg(long)]
    pub spool: PathBuf,
    #[arg(long)]
    pub after: String,
    #[arg(long, default_value_t = 8)]
    pub count: u32,
    #[arg(long, default_value_t = 16 << 20)]
    pub segment_size: u64,
}

pub async fn run(args: WalPrefetchArgs, repo_args: &RepoArgs) -> u8 {
    let Ok(WalFileName::Segment(after)) = args.after.parse::<WalFileName>() else {
        warn!("wal-prefetch: '{}' is not a segment name", args.after);
        return exit::USAGE;
    };
    let mut secrets = Vec::new();
    let result = async {
        let cfg = repo_args.to_config()?;
        secrets = cfg.secrets();
        let repo = Repo::open(&cfg)?;
        prefetch::prefetch(
            &repo,
            &args.spool,
            &repo.describe(),
            &after,
            args.count,
            args.segment_size,
            // All of them at once: the spool holds `count` segments at most.
            args.count as usize,
        )
        .await
    }
    .await;
    match result {
        Ok(n) => debug!("wal-prefetch: {n} segments after {after} spooled"),
        Err(e) => warn!(
            "wal-prefetch after {after}: {} (wal-fetch will fetch directly)",
            redact(&e.to_string(), &secrets)
        ),
    }
    exit::OK
}
