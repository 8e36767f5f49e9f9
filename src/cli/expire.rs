//! `pitr expire` (and `pitr backup delete --retention-policy`, the
//! barman-cloud-backup-delete form): applies a retention policy and prints,
//! per backup, the status it was given and why, then what was deleted.

use clap::Args;
use tracing::{error, info};

use super::backup_output::Format;
use super::exit;
use super::repo_args::RepoArgs;
use pitr::config::redact;
use pitr::error::{Error, Result};
use pitr::repo::Repo;
use pitr::retention::wal_needed::Boundary;
use pitr::retention::{expire, ExpireReport, ExpireRequest, RetentionPolicy};

#[derive(Debug, Args)]
pub struct ExpireArgs {
    /// REDUNDANCY N, RECOVERY WINDOW OF N DAYS|WEEKS|MONTHS, or Nd / Nw / Nm (e.g. 30d)
    #[arg(
        short = 'r',
        long,
        env = "PITR_RETENTION_POLICY",
        value_name = "POLICY"
    )]
    pub retention_policy: Option<String>,

    #[command(flatten)]
    pub common: ExpireOptions,
}

/// What `expire` and `backup delete --retention-policy` share.
#[derive(Debug, Args)]
pub struct ExpireOptions {
    /// Never leave fewer than N DONE backups, whatever the policy says
    #[arg(
        short = 'm',
        long,
        env = "PITR_MINIMUM_REDUNDANCY",
        default_value_t = 0,
        value_name = "N"
    )]
    pub minimum_redundancy: u32,

    /// Report what would be deleted; delete nothing
    #[arg(long)]
    pub dry_run: bool,

    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub async fn run(args: ExpireArgs, repo_args: &RepoArgs) -> u8 {
    let Some(policy) = args.retention_policy.filter(|p| !p.trim().is_empty()) else {
        error!(
            "expire: --retention-policy / PITR_RETENTION_POLICY is not set: e.g. \
             'RECOVERY WINDOW OF 30 DAYS', 'REDUNDANCY 7' or '30d'"
        );
        return exit::USAGE;
    };
    run_policy(&policy, &args.common, repo_args, "expire").await
}

/// Applies `policy` with `opts`; `what` names the command in messages.
pub async fn run_policy(
    policy: &str,
    opts: &ExpireOptions,
    repo_args: &RepoArgs,
    what: &str,
) -> u8 {
    let mut secrets = Vec::new();
    let result: Result<ExpireReport> = async {
        let policy: RetentionPolicy = policy.parse()?;
        let cfg = repo_args.to_config()?;
        secrets = cfg.secrets();
        let repo = Repo::open(&cfg)?;
        let req = ExpireRequest::now(policy, opts.minimum_redundancy, opts.dry_run);
        expire(&repo, &req).await
    }
    .await;
    match result {
        Ok(report) => {
            print(&report, opts.format);
            let d = &report.deleted;
            info!(
                "{what}: {} {} backups and {} WAL files ({} objects)",
                if report.dry_run {
                    "would delete"
                } else {
                    "deleted"
                },
                d.backups,
                d.wal_files(),
                d.objects()
            );
            exit::OK
        }
        Err(e) => fail(what, &e, &secrets),
    }
}

fn fail(what: &str, e: &Error, secrets: &[String]) -> u8 {
    error!("{what}: {}", redact(&e.to_string(), secrets));
    exit::for_error(e.kind())
}

fn print(r: &ExpireReport, format: Format) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(r).expect("the report serialises")
        ),
        Format::Text => print_text(r),
    }
}

fn print_text(r: &ExpireReport) {
    println!(
        "Retention policy {} (minimum redundancy {}) on {}",
        r.policy, r.minimum_redundancy, r.repository
    );
    if let Some(por) = r.point_of_recoverability {
        println!(
            "Point of recoverability: {}",
            por.format("%Y-%m-%d %H:%M:%S%:z")
        );
    }
    println!(
        "{:<16} {:<9} {:<20} {:<6} WHY",
        "BACKUP", "STATUS", "RETENTION", "ACTION"
    );
    for v in &r.backups {
        println!(
            "{:<16} {:<9} {:<20} {:<6} {}",
            v.backup_id.as_str(),
            v.status.as_str(),
            v.retention.as_str(),
            if v.delete { "delete" } else { "keep" },
            v.reason
        );
    }
    match &r.wal_boundary {
        Boundary::From { segment, backup } => {
            println!("WAL kept from {segment} on, every timeline (the begin of backup {backup})")
        }
        Boundary::KeepAll { reason } => println!("All WAL kept: {reason}"),
    }
    for p in &r.protected {
        println!(
            "WAL {} to {} kept for the standalone keep of backup {}",
            p.begin, p.end, p.backup
        );
    }
    let d = &r.deleted;
    println!(
        "{} {} backups ({} objects), {} WAL files ({} segments, {} partial, {} backup labels, \
         {} history files), {} leftover directories of deletes cut short ({} objects)",
        if r.dry_run { "Would delete" } else { "Deleted" },
        d.backups,
        d.backup_objects,
        d.wal_files(),
        d.wal_segments,
        d.wal_partials,
        d.backup_labels,
        d.histories,
        d.leftover_directories,
        d.leftover_objects
    );
}
