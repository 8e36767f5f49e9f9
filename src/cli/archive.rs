//! `pitr archive verify`: the whole WAL archive checked, per timeline.

use clap::{Args, Subcommand};
use tracing::error;

use super::backup_output::Format;
use super::exit;
use super::repo_args::RepoArgs;
use pitr::config::redact;
use pitr::error::{Error, Result};
use pitr::repo::Repo;
use pitr::verify::report::{BackupWal, Coverage, VerifyReport};
use pitr::verify::{verify, VerifyOptions};
use pitr::wal::{SegmentName, TimelineId, WalFileName};

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    #[command(subcommand)]
    pub action: ArchiveAction,
}

#[derive(Debug, Subcommand)]
pub enum ArchiveAction {
    /// Check the WAL archive: ranges and gaps per timeline, history files,
    /// stored objects, and how far each backup can be restored
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only WAL from this segment's position on (no checkpoint kept)
    #[arg(long, value_name = "SEGMENT")]
    pub from: Option<String>,
    /// Only this timeline (no checkpoint kept)
    #[arg(long, value_name = "N")]
    pub timeline: Option<u32>,
    /// Download and check every object not checked before: checksum,
    /// decompression, page header (system identifier and address)
    #[arg(long)]
    pub deep: bool,
    /// Ignore the checkpoint: list (and with --deep, read) everything again
    #[arg(long)]
    pub full: bool,
    /// Walk fully when the last full walk is older than this many days
    #[arg(long, env = "PITR_VERIFY_FULL_AFTER_DAYS", default_value_t = 7)]
    pub full_after_days: u32,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

impl VerifyArgs {
    fn options(&self) -> Result<VerifyOptions> {
        let from = match &self.from {
            None => None,
            Some(s) => match s.parse::<WalFileName>() {
                Ok(WalFileName::Segment(seg)) => Some(seg),
                _ => {
                    return Err(Error::Config(format!(
                        "--from '{s}' is not a WAL segment name (24 hex digits, e.g. \
                         000000010000000000000001)"
                    )))
                }
            },
        };
        let timeline = match self.timeline {
            None => None,
            Some(n) => Some(TimelineId::new(n).ok_or_else(|| {
                Error::Config("--timeline must be 1 or more (timeline ids start at 1)".into())
            })?),
        };
        Ok(VerifyOptions {
            from,
            timeline,
            deep: self.deep,
            full: self.full,
            full_after: chrono::TimeDelta::days(i64::from(self.full_after_days)),
        })
    }
}

fn backup_line(b: &BackupWal) -> String {
    let seg = |s: &Option<SegmentName>| s.map(|s| s.to_string()).unwrap_or_default();
    if !b.wal_complete {
        return format!(
            "UNUSABLE: WAL it needs is missing from {}: it cannot be restored",
            seg(&b.first_missing)
        );
    }
    let to = b.restorable_to.map(|l| l.to_string()).unwrap_or_default();
    let mut line = format!(
        "restorable from {} to {} (timeline {}, last segment {})",
        b.restorable_from,
        to,
        b.to_timeline.get(),
        seg(&b.last_segment)
    );
    if b.stopped_by_gap {
        line.push_str(&format!(
            "; not past the gap at {}: later WAL is archived but unreachable from this backup",
            seg(&b.first_missing)
        ));
    }
    line
}

fn print_text(r: &VerifyReport) {
    println!("repository   {}", r.repository);
    let walk = match r.coverage {
        Coverage::Full => "full",
        Coverage::Incremental => "incremental (from the last checkpoint)",
        Coverage::Partial => "partial (--from/--timeline; no checkpoint)",
    };
    println!(
        "walk         {walk}{}: {} keys listed, {} objects read ({} bytes)",
        if r.deep { ", deep" } else { "" },
        r.read.keys_listed,
        r.read.objects_read,
        r.read.bytes_read
    );
    if r.timelines.is_empty() {
        println!("timelines    none: the archive holds no segment");
    }
    for t in &r.timelines {
        for range in &t.ranges {
            println!("timeline {:<3} {range}", t.timeline.get());
        }
        for gap in &t.gaps {
            println!("GAP          {gap} missing");
        }
    }
    for h in &r.history_problems {
        println!("HISTORY      {h}");
    }
    for o in &r.object_problems {
        println!("OBJECT       {} {}", o.key, o.fault);
    }
    for b in &r.backups {
        println!("backup {} {}", b.backup_id, backup_line(b));
    }
    if r.healthy {
        println!("result       healthy");
    } else {
        let incomplete = r.backups.iter().filter(|b| !b.wal_complete).count();
        println!(
            "result       PROBLEMS: {} gaps, {} history problems, {} object problems, {} backups with incomplete WAL",
            r.gaps(),
            r.history_problems.len(),
            r.object_problems.len(),
            incomplete
        );
    }
}

pub async fn run(args: ArchiveArgs, repo_args: &RepoArgs) -> u8 {
    let ArchiveAction::Verify(args) = args.action;
    let mut secrets = Vec::new();
    let result = async {
        let cfg = repo_args.to_config()?;
        secrets = cfg.secrets();
        let opts = args.options()?;
        verify(&Repo::open(&cfg)?, &opts).await
    }
    .await;
    match result {
        Ok(r) => {
            match args.format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&r).expect("report serialises")
                ),
                Format::Text => print_text(&r),
            }
            if r.healthy {
                exit::OK
            } else {
                exit::PROBLEMS
            }
        }
        Err(e) => {
            error!("archive verify: {}", redact(&e.to_string(), &secrets));
            exit::for_error(e.kind())
        }
    }
}
