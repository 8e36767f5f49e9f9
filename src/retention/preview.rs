//! What `expire` would remove now, for `status`: the policy's verdict on
//! each backup, from the catalog status already read and each backup's
//! keep annotation (one small GET per backup, one after another), without listing the WAL.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::Serialize;

use super::classify::{classify, Rules};
use super::RetentionPolicy;
use crate::backup::abandoned::ABANDONED_AFTER;
use crate::backup::catalog::CatalogEntry;
use crate::backup::keep;
use crate::error::Result;
use crate::repo::Repo;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionPreview {
    pub policy: String,
    pub minimum_redundancy: u32,
    /// The backups `expire` would delete now (their WAL goes with them).
    pub would_remove: Vec<String>,
    /// The backups it keeps.
    pub kept: usize,
}

/// Rates `entries` under `policy` as `expire` would at this moment.
pub async fn preview(
    repo: &Repo,
    entries: &[CatalogEntry],
    policy: RetentionPolicy,
    minimum_redundancy: u32,
) -> Result<RetentionPreview> {
    let mut keeps = BTreeMap::new();
    for e in entries {
        let id = &e.info.backup_id;
        if let Some(target) = keep::get(repo, id).await? {
            keeps.insert(id.clone(), target);
        }
    }
    let rules = Rules {
        policy,
        minimum_redundancy,
        now: Utc::now(),
        abandoned_after: ABANDONED_AFTER,
    };
    let verdicts = classify(entries, &keeps, &rules);
    Ok(RetentionPreview {
        policy: policy.to_string(),
        minimum_redundancy,
        would_remove: verdicts
            .iter()
            .filter(|v| v.delete)
            .map(|v| v.backup_id.to_string())
            .collect(),
        kept: verdicts.iter().filter(|v| !v.delete).count(),
    })
}
