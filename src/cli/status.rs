//! `pitr status [--format json]`: the repository at a glance.

use chrono::{DateTime, Utc};
use clap::Args;
use tracing::error;

use super::backup_output::Format;
use super::exit;
use super::repo_args::RepoArgs;
use pitr::config::redact;
use pitr::repo::Repo;
use pitr::status::{gather, BackupPoint, RepoStatus};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
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
        gather(&Repo::open(&cfg)?).await
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
