//! The store and the repository: settings, credentials, bucket, a test
//! object written, read back and deleted, and the identity record.

use bytes::Bytes;

use super::{CheckLine, CheckReport, Step};
use crate::config::{RepoConfig, RepoLocation};
use crate::error::Result;
use crate::repo::Repo;
use crate::store::PutOptions;
use crate::wal::identity::{self, RepoIdentity};

/// How the store is reached, for the OK line (never credentials).
fn reach(cfg: &RepoConfig) -> String {
    match &cfg.location {
        RepoLocation::Fs { .. } => "a local directory".into(),
        RepoLocation::S3 { .. } => {
            let s = &cfg.s3;
            let mut parts = vec![
                if s.path_style {
                    "path style".to_string()
                } else {
                    "virtual-host style".to_string()
                },
                format!("SSE {}", s.sse.name()),
            ];
            if let Some(ca) = &s.ca_bundle {
                parts.push(format!("CA bundle {}", ca.display()));
            }
            parts.join(", ")
        }
    }
}

/// Checks the store; returns the repository when it answers.
pub(super) async fn check(cfg: &RepoConfig, report: &mut CheckReport) -> Option<Repo> {
    let repo = match Repo::open(cfg) {
        Ok(r) => r,
        Err(e) => {
            report.lines.push(CheckLine::fail(
                Step::Settings,
                e.to_string(),
                "fix the setting the message names",
            ));
            for step in [Step::Store, Step::WriteReadDelete, Step::Identity] {
                report
                    .lines
                    .push(CheckLine::skip(step, "the settings do not parse"));
            }
            return None;
        }
    };
    report.lines.push(CheckLine::ok(
        Step::Settings,
        format!("{} ({})", cfg.location, reach(cfg)),
    ));

    // One listing: endpoint, TLS and CA, credentials and bucket at once.
    if let Err(e) = repo.store.any_under(repo.layout.server_root()).await {
        report.lines.push(CheckLine::fail(
            Step::Store,
            e.to_string(),
            "fix the endpoint, CA bundle, credentials or bucket the message names",
        ));
        for step in [Step::WriteReadDelete, Step::Identity] {
            report
                .lines
                .push(CheckLine::skip(step, "the store does not answer"));
        }
        return None;
    }
    report.lines.push(CheckLine::ok(
        Step::Store,
        match cfg.location {
            RepoLocation::S3 { .. } => format!(
                "{} answers to these credentials; the bucket exists",
                repo.describe()
            ),
            RepoLocation::Fs { .. } => format!("{} is readable", repo.describe()),
        },
    ));

    let key = repo.layout.check_key(&token());
    report
        .lines
        .push(match write_read_delete(&repo, &key).await {
            Ok(()) => CheckLine::ok(
                Step::WriteReadDelete,
                format!("wrote, read back and deleted {key}"),
            ),
            Err(e) => CheckLine::fail(
                Step::WriteReadDelete,
                e.to_string(),
                "give these credentials write, read and delete rights under the server's prefix; \
             check --sse / PITR_SSE (Ceph RGW takes SSE over https only)",
            ),
        });

    report.lines.push(match identity::load(&repo).await {
        Ok(Some(id)) => match identity::check_key(&repo, &id, "pitr check") {
            Ok(()) => CheckLine::ok(Step::Identity, describe(&id)),
            Err(e) => CheckLine::fail(
                Step::Identity,
                e.to_string(),
                "set --encryption-key-file / PITR_ENCRYPTION_KEY_FILE",
            ),
        },
        Ok(None) => CheckLine::ok(
            Step::Identity,
            "none yet: the first wal-push records the database system",
        ),
        Err(e) => CheckLine::fail(
            Step::Identity,
            e.to_string(),
            "the identity record is damaged: move it away, and the next wal-push records it again",
        ),
    });
    Some(repo)
}

fn describe(id: &RepoIdentity) -> String {
    format!(
        "database system {}, {}-byte segments{}",
        id.system_identifier,
        id.wal_segment_size,
        if id.encrypted() {
            ", client-side encrypted"
        } else {
            ""
        }
    )
}

/// A name for the test object no other check uses at once.
fn token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos:x}", std::process::id())
}

async fn write_read_delete(repo: &Repo, key: &str) -> Result<()> {
    let body = format!("pitr check {key}\n");
    repo.store
        .put(key, Bytes::from(body.clone()), PutOptions::default())
        .await?;
    let back = repo.store.get_bytes(key).await;
    // Delete whatever happened to the read.
    let deleted = repo.store.delete(key).await;
    let back = back?;
    deleted?;
    if back.as_deref() != Some(body.as_bytes()) {
        return Err(crate::error::Error::Store(format!(
            "{key} read back differs from what was written to {}",
            repo.describe()
        )));
    }
    if repo.store.head(key).await?.is_some() {
        return Err(crate::error::Error::Store(format!(
            "{key} is still in {} after it was deleted",
            repo.describe()
        )));
    }
    Ok(())
}
