//! `pitr wal-push PATH`

use std::path::PathBuf;

use clap::Args;
use tracing::{error, info};

use super::exit;
use super::repo_args::RepoArgs;
use pitr::config::redact;
use pitr::repo::Repo;
use pitr::wal::prefetch;
use pitr::wal::push::{push, PushOutcome};

#[derive(Debug, Args)]
pub struct WalPushArgs {
    /// The WAL file to archive (%p in archive_command)
    pub path: PathBuf,
}

pub async fn run(args: WalPushArgs, repo_args: &RepoArgs) -> u8 {
    let mut secrets = Vec::new();
    let result = async {
        let cfg = repo_args.to_config()?;
        secrets = cfg.secrets();
        let repo = Repo::create(&cfg)?;
        push(&repo, &args.path).await
    }
    .await;
    // A server that archives has finished recovery: a prefetch spool left
    // from it (PostgreSQL asks for the last segment again at the end) goes.
    let spool = prefetch::spool_dir(&args.path);
    if result.is_ok() && spool.exists() {
        prefetch::clear(&spool);
    }
    let shown = args.path.display();
    match result {
        Ok(PushOutcome::Stored {
            key,
            plain_size,
            stored_size,
        }) => {
            info!("wal-push {shown}: stored as {key} ({plain_size} bytes, {stored_size} stored)");
            exit::OK
        }
        Ok(PushOutcome::AlreadyArchived { key }) => {
            info!("wal-push {shown}: already archived as {key} with the same content");
            exit::OK
        }
        Err(e) => {
            error!("wal-push {shown}: {}", redact(&e.to_string(), &secrets));
            exit::for_error(e.kind())
        }
    }
}
