//! `pitr status [--format json]`: the repository at a glance.

use chrono::{DateTime, Utc};
use clap::Args;
use tracing::error;

use super::backup_output::Format;
use super::exit;
use super::repo_args::RepoArgs;
use pitr::config::redact;
use pitr::repo::Repo;
use pitr::status::{gather_with, BackupPoint, RepoStatus};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Also say what `pitr expire` would remove now under this policy
    #[arg(
        short = 'r',
        long,
        env = "PITR_RETENTION_POLICY",
        value_name = "POLICY"
    )]
    pub retention_policy: Option<String>,
    /// The minimum redundancy `pitr expire` would keep
    #[arg(
        short = 'm',
        long,
        env = "PITR_MINIMUM_REDUNDANCY",
        default_value_t = 0,
        value_name = "N"
    )]
    pub minimum_redundancy: u32,
}

/// "3 h ago", for a time in the past.
fn ago(t: DateTime<Utc>) -> String {
    let s = (Utc::now() - t).num_seconds().max(0);
    match s {
        0..120 => format!("{s} s ago"),
        120..7200 => format!("{} min ago", s / 60),
        7200..172_800 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

fn backup_line(b: &BackupPoint) -> String {
    let mut line = b.backup_id.to_string();
    if let Some(n) = &b.name {
        line.push_str(&format!(" ({n})"));
    }
    if let Some(end) = b.end_time {
        line.push_str(&format!(
            ", ended {} ({})",
            end.to_rfc3339(),
            ago(end.with_timezone(&Utc))
        ));
    }
    if let Some(size) = b.size {
        line.push_str(&format!(", {size} bytes stored"));
    }
    if let Some(d) = b.duration_seconds() {
        line.push_str(&format!(", took {d:.0} s"));
    }
    line
}

fn print_text(s: &RepoStatus) {
    println!("repository       {}", s.repository);
    match &s.last_archived {
        Some(tip) => println!(
            "last archived    {}{}",
            tip.segment,
            tip.archived_at
                .map(|t| format!(" at {} ({})", t.to_rfc3339(), ago(t)))
                .unwrap_or_default()
        ),
        None => println!("last archived    none: the archive is empty"),
    }
    println!(
        "backups          {} usable of {}",
        s.usable_backups, s.backups
    );
    match &s.last_backup {
        Some(b) => println!("last backup      {}", backup_line(b)),
        None => println!("last backup      none usable: take one with `pitr backup`"),
    }
    if let Some(b) = &s.last_failed_backup {
        println!("last failed      {}", backup_line(b));
    }
    for t in &s.timelines {
        println!(
            "timeline {:<7} {} to {}",
            t.timeline.get(),
            t.first_segment,
            t.last_segment
        );
    }
    match &s.last_verify {
        None => println!("last verify      never: run `pitr archive verify`"),
        Some(v) => {
            println!(
                "last verify      {} ({}): {}",
                v.verified_at.to_rfc3339(),
                ago(v.verified_at),
                if v.healthy { "healthy" } else { "PROBLEMS" }
            );
            for g in &v.gaps {
                println!("gap              {g} missing");
            }
            for h in &v.history_problems {
                println!("history          {h}");
            }
            if v.object_problems > 0 {
                println!(
                    "objects          {} damaged, foreign or misplaced (see `pitr archive verify`)",
                    v.object_problems
                );
            }
            for b in &v.incomplete_backups {
                println!("backup {b} has incomplete WAL: it cannot be restored");
            }
        }
    }
    match &s.retention {
        Some(r) if r.would_remove.is_empty() => println!(
            "retention        {} (minimum redundancy {}): nothing to remove now, {} backups kept",
            r.policy, r.minimum_redundancy, r.kept
        ),
        Some(r) => println!(
            "retention        {} (minimum redundancy {}): `pitr expire` would remove {} ({}) and keep {}",
            r.policy,
            r.minimum_redundancy,
            r.would_remove.len(),
            r.would_remove.join(", "),
            r.kept
        ),
        None => println!("retention        no policy given (--retention-policy / PITR_RETENTION_POLICY)"),
    }
    if let Some(x) = &s.last_expire {
        println!(
            "last expire      {} ({}){}: {} backups removed",
            x.finished_at.to_rfc3339(),
            ago(x.finished_at),
            if x.dry_run { ", dry run" } else { "" },
            x.obsolete_backups
        );
    }
    match &s.last_drill {
        None => println!("last drill       never: run `pitr drill`"),
        Some(d) => println!(
            "last drill       {} ({}): {}{}",
            d.finished_at.to_rfc3339(),
            ago(d.finished_at),
            if d.passed { "passed" } else { "FAILED" },
            d.rto_seconds
                .map(|r| format!(", RTO {r:.1} s"))
                .unwrap_or_default()
        ),
    }
    match s.first_recoverability_point {
        Some(t) => println!(
            "recoverable      from {} to the end of the archive",
            t.to_rfc3339()
        ),
        None => println!("recoverable      nothing yet (no usable backup)"),
    }
}

pub async fn run(args: StatusArgs, repo_args: &RepoArgs) -> u8 {
    let mut secrets = Vec::new();
    let result = async {
        let cfg = repo_args.to_config()?;
        secrets = cfg.secrets();
        let retention = match args.retention_policy.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => Some((p.parse()?, args.minimum_redundancy)),
            _ => None,
        };
        gather_with(&Repo::open(&cfg)?, retention).await
    }
    .await;
    match result {
        Ok(s) => {
            match args.format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&s).expect("status serialises")
                ),
                Format::Text => print_text(&s),
            }
            exit::OK
        }
        Err(e) => {
            error!("status: {}", redact(&e.to_string(), &secrets));
            exit::for_error(e.kind())
        }
    }
}
