//! `pitr wal-fetch NAME DEST`
//!
//! Exit 1 means "not in the archive", which PostgreSQL takes as the end of
//! archived WAL. Any other failure is retried; then, outside standby mode, it
//! exits 255 so that PostgreSQL stops rather than ending recovery early and
//! promoting with WAL missing. In standby mode it exits 1 so PostgreSQL falls
//! back to streaming replication.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tracing::{error, info, warn};

use super::exit;
use super::repo_args::RepoArgs;
use pitr::config::redact;
use pitr::repo::Repo;
use pitr::wal::restore_command::{restore_wal, RetryPolicy, Verdict};
use std::os::unix::process::CommandExt;

use pitr::wal::{prefetch, SegmentName, WalFileName};

#[derive(Debug, Args)]
pub struct WalFetchArgs {
    /// Treat this server as a standby: on failure exit 1 so PostgreSQL falls
    /// back to streaming (also when standby.signal is in the data directory)
    #[arg(long, env = "PITR_STANDBY")]
    pub standby: bool,

    /// Data directory to look for standby.signal in (default: the current
    /// directory, which is the data directory when PostgreSQL runs restore_command)
    #[arg(long, env = "PITR_PGDATA", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,

    /// How many times to retry a failure other than "not found"
    #[arg(long, env = "PITR_FETCH_RETRIES", default_value_t = 3)]
    pub retries: u32,

    /// Seconds to wait before the first retry (doubling after each)
    #[arg(long, env = "PITR_FETCH_RETRY_WAIT", default_value_t = 1.0)]
    pub retry_wait: f64,

    /// Segments to download ahead into pg_wal/.pitr-prefetch while
    /// PostgreSQL replays (0 turns prefetching off)
    #[arg(long, env = "PITR_PREFETCH", default_value_t = 8)]
    pub prefetch: u32,

    /// At most this many MiB of prefetched segments in the spool (fewer
    /// segments are prefetched when they are large)
    #[arg(long, env = "PITR_PREFETCH_MAX_MIB", default_value_t = prefetch::DEFAULT_SPOOL_MAX_BYTES >> 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub prefetch_max_mib: u64,

    /// The WAL file PostgreSQL asks for (%f)
    pub name: String,

    /// Where to write it (%p)
    pub dest: PathBuf,
}

/// How long wal-fetch waits for a segment the prefetcher is downloading
/// before it fetches the segment itself.
const PREFETCH_WAIT_SECS: u64 = 30;

/// Why this run counts as standby mode, if it does.
pub fn standby_reason(flag: bool, pgdata: Option<&Path>) -> Option<String> {
    if flag {
        return Some("--standby / PITR_STANDBY is set".into());
    }
    let dir = pgdata.unwrap_or(Path::new("."));
    dir.join("standby.signal")
        .exists()
        .then(|| format!("{} exists", dir.join("standby.signal").display()))
}

/// The exit code for a failure that is not "not found", with the log line
/// that says which rule applied.
pub fn failure_exit(what: &str, message: &str, standby: Option<String>) -> u8 {
    match standby {
        Some(why) => {
            error!("{what}: {message}; standby mode ({why}): exiting 1 so PostgreSQL falls back to streaming replication");
            exit::FAILED
        }
        None => {
            error!(
                "{what}: {message}; not in standby mode: exiting {} so PostgreSQL stops recovery \
                 instead of ending it early and promoting with WAL missing; fix the cause and start \
                 the server again",
                exit::FETCH_FATAL
            );
            exit::FETCH_FATAL
        }
    }
}

/// After `segment` is in place: drop older spooled segments, and start a
/// prefetcher when fewer than half of the wanted segments are spooled.
fn after_segment(args: &WalFetchArgs, repo_args: &RepoArgs, segment: &SegmentName, spool: &Path) {
    prefetch::prune(spool, segment);
    if args.prefetch == 0 {
        return;
    }
    let Some(segment_size) = prefetch::segment_size_of(&args.dest) else {
        warn!(
            "{} has no readable WAL page header: not prefetching after it",
            args.dest.display()
        );
        return;
    };
    let count = prefetch::bounded_count(args.prefetch, segment_size, args.prefetch_max_mib << 20);
    if !prefetch::needs_refill(spool, count) {
        return;
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| "pitr".into());
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("wal-prefetch")
        .args(repo_args.fetch_args())
        .arg("--spool")
        .arg(spool)
        .args([
            "--after",
            &segment.to_string(),
            "--count",
            &count.to_string(),
        ])
        .args(["--segment-size", &segment_size.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // Its own process group: signals meant for this command spare it.
        .process_group(0);
    if let Err(e) = cmd.spawn() {
        warn!("cannot start the WAL prefetcher: {e}");
    }
}

pub async fn run(args: WalFetchArgs, repo_args: &RepoArgs) -> u8 {
    let standby = standby_reason(args.standby, args.pgdata.as_deref());
    let what = format!("wal-fetch {}", args.name);
    let name: WalFileName = match args.name.parse() {
        Ok(n) => n,
        Err(e) => return failure_exit(&what, &e.to_string(), standby),
    };
    let mut cfg = match repo_args.to_config() {
        Ok(c) => c,
        Err(e) => return failure_exit(&what, &e.to_string(), standby),
    };
    // One retry layer: whole fetches below, not each request inside them.
    cfg.s3.request_attempts = 1;
    let secrets = cfg.secrets();
    let repo = match Repo::open(&cfg) {
        Ok(r) => r,
        Err(e) => return failure_exit(&what, &redact(&e.to_string(), &secrets), standby),
    };

    let spool = prefetch::spool_dir(&args.dest);
    let source = repo.describe();
    if let WalFileName::Segment(segment) = name {
        let wait = Duration::from_secs(PREFETCH_WAIT_SECS);
        match prefetch::take_or_wait(&spool, &name, &source, &args.dest, wait).await {
            Ok(true) => {
                info!("{what}: restored from the prefetch spool");
                after_segment(&args, repo_args, &segment, &spool);
                return exit::OK;
            }
            Ok(false) => {}
            Err(e) => warn!(
                "{what}: cannot use the prefetch spool {}: {e}",
                spool.display()
            ),
        }
    }

    let policy = RetryPolicy {
        attempts: args.retries.saturating_add(1),
        first_wait: Duration::from_secs_f64(args.retry_wait.max(0.0)),
    };
    let verdict = restore_wal(&repo, &name, &args.dest, policy, |r| {
        warn!(
            "{what}: attempt {} of {} failed: {}; retrying in {:.1}s",
            r.attempt,
            r.attempts,
            redact(&r.error.to_string(), &secrets),
            r.wait.as_secs_f64()
        )
    })
    .await;
    if !matches!(verdict, Verdict::Restored(_)) && matches!(name, WalFileName::Segment(_)) {
        prefetch::clear(&spool);
    }
    match verdict {
        Verdict::Restored(done) => {
            if let WalFileName::Segment(segment) = name {
                after_segment(&args, repo_args, &segment, &spool);
            }
            info!(
                "{what}: restored from {} ({} bytes{})",
                done.key,
                done.size,
                if done.checksum_verified {
                    ", SHA-256 verified"
                } else {
                    ""
                }
            );
            exit::OK
        }
        Verdict::NotInArchive => {
            info!("{what}: not in the archive: exiting 1 (the end of the archived WAL, or a timeline that does not exist)");
            exit::FAILED
        }
        Verdict::Gap { later } => failure_exit(
            &what,
            &format!(
                "{name} is missing from the archive, but the later segment {later} of the same \
                 timeline is there: the archive has a gap, and ending recovery here would lose \
                 everything after it. Put the missing segment back (from pg_wal of the old \
                 server, or another copy), or recover to a target before it"
            ),
            standby,
        ),
        Verdict::Failed { error, attempts } => {
            let message = format!(
                "{} (after {attempts} attempt{})",
                redact(&error.to_string(), &secrets),
                if attempts == 1 { "" } else { "s" }
            );
            failure_exit(&what, &message, standby)
        }
    }
}
