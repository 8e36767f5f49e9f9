//! `pitr expire`: applies a retention policy to a repository.
//!
//! The order makes every crash safe. First the backup.info of every backup
//! that goes (from then on no tool lists it, so none offers it for a
//! restore), then the rest of those backups' objects, then the WAL that no
//! remaining backup needs, oldest first, history files last. A run cut
//! short leaves backups that are either complete or invisible, and WAL
//! that every listed backup still has; the next run finds the directories
//! left without a backup.info (older than the newest backup, so never a
//! backup being taken) and finishes them, and deletes the WAL again from
//! the same boundary, since the backups that stay have not changed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::classify::{classify, Rules, Verdict};
use super::policy::RetentionPolicy;
use super::wal_needed::{self, Boundary, Protected, WalObject};
use crate::backup::abandoned::ABANDONED_AFTER;
use crate::backup::{catalog, keep, BackupId};
use crate::error::Result;
use crate::repo::Repo;
use crate::restore::archive_index::ArchiveIndex;
use crate::state::{self, StateKind};
use crate::wal::WalFileName;

#[derive(Debug, Clone)]
pub struct ExpireRequest {
    pub policy: RetentionPolicy,
    pub minimum_redundancy: u32,
    /// Report what would go; delete nothing.
    pub dry_run: bool,
    /// The time the recovery window counts back from.
    pub now: DateTime<Utc>,
}

impl ExpireRequest {
    /// A request counting the recovery window back from the current time.
    pub fn now(policy: RetentionPolicy, minimum_redundancy: u32, dry_run: bool) -> Self {
        ExpireRequest {
            policy,
            minimum_redundancy,
            dry_run,
            now: Utc::now(),
        }
    }
}

/// What was (or, in a dry run, would be) deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Backups removed by the policy (OBSOLETE, superseded FAILED/STARTED).
    pub backups: usize,
    /// Their objects (backup.info, tars, keep annotations, pitr's details).
    pub backup_objects: usize,
    /// Backup directories a delete cut short had left without backup.info.
    pub leftover_directories: usize,
    pub leftover_objects: usize,
    pub wal_segments: usize,
    pub wal_partials: usize,
    /// `.backup` label files.
    pub backup_labels: usize,
    pub histories: usize,
}

impl Counts {
    pub fn wal_files(&self) -> usize {
        self.wal_segments + self.wal_partials + self.backup_labels + self.histories
    }

    pub fn objects(&self) -> usize {
        self.backup_objects + self.leftover_objects + self.wal_files()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ExpireReport {
    pub repository: String,
    pub policy: RetentionPolicy,
    pub minimum_redundancy: u32,
    pub point_of_recoverability: Option<DateTime<Utc>>,
    pub dry_run: bool,
    /// Every backup, oldest first.
    pub backups: Vec<Verdict>,
    pub wal_boundary: Boundary,
    /// Old WAL kept for standalone keeps.
    pub protected: Vec<Protected>,
    pub deleted: Counts,
}

/// The Expire state record: the last run, in brief.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireState {
    /// When the run ended (`pitr metrics` reads it).
    pub finished_at: DateTime<Utc>,
    pub dry_run: bool,
    pub policy: String,
    pub minimum_redundancy: u32,
    pub backups_kept: usize,
    /// Backups the policy made obsolete: deleted, or with `dry_run` to be
    /// deleted (`pitr metrics`: pitr_retention_obsolete_backups).
    pub obsolete_backups: usize,
    pub deleted_backups: Vec<String>,
    /// WAL is kept from this segment's position on (every timeline).
    pub wal_kept_from: Option<String>,
    pub deleted: Counts,
}

/// The objects of every backup directory, under `base/` and pitr's own.
#[derive(Default)]
struct BackupObjects {
    keys: BTreeMap<BackupId, Vec<String>>,
    with_info: BTreeSet<BackupId>,
}

async fn backup_objects(repo: &Repo) -> Result<BackupObjects> {
    let mut out = BackupObjects::default();
    for o in repo.store.list(&repo.layout.base_prefix()).await? {
        if let Some((id, _)) = repo.layout.parse_backup_key(&o.key) {
            if o.key == repo.layout.backup_info_key(&id) {
                out.with_info.insert(id.clone());
            }
            out.keys.entry(id).or_default().push(o.key);
        }
    }
    for o in repo.store.list(&repo.layout.pitr_backups_prefix()).await? {
        if let Some(id) = repo.layout.parse_pitr_backup_key(&o.key) {
            out.keys.entry(id).or_default().push(o.key);
        }
    }
    Ok(out)
}

/// The archive's WAL files, and every history file's ancestry (`None`
/// when one cannot be read).
async fn wal_listing(
    repo: &Repo,
) -> Result<(
    Vec<WalObject>,
    BTreeMap<crate::wal::TimelineId, Option<crate::wal::history::TimelinePath>>,
)> {
    let mut wal = Vec::new();
    let layout = &repo.layout;
    repo.store
        .list_each(&layout.wals_prefix(), None, &mut |o| {
            if let Some(k) = layout.parse_wal_key(&o.key) {
                wal.push(WalObject {
                    name: k.name,
                    key: o.key,
                });
            }
        })
        .await?;
    let index = ArchiveIndex::histories(repo).await?;
    let mut histories = BTreeMap::new();
    for tli in index.histories.keys() {
        let path = match index.path(repo, *tli).await {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!("timeline {tli}'s history cannot be read ({e}): no history file will be deleted");
                None
            }
        };
        histories.insert(*tli, path);
    }
    Ok((wal, histories))
}

/// Applies `req.policy` to `repo`: see the module's documentation.
pub async fn expire(repo: &Repo, req: &ExpireRequest) -> Result<ExpireReport> {
    // A backup.info that cannot be read fails the listing: nothing is
    // deleted while the catalog is not fully known.
    let entries = catalog::list(repo).await?;
    let objects = backup_objects(repo).await?;
    let mut keeps = BTreeMap::new();
    for id in objects.keys.keys() {
        let has_keep = objects.keys[id]
            .iter()
            .any(|k| *k == repo.layout.keep_annotation_key(id));
        if has_keep {
            if let Some(target) = keep::get(repo, id).await? {
                keeps.insert(id.clone(), target);
            }
        }
    }
    let rules = Rules {
        policy: req.policy,
        minimum_redundancy: req.minimum_redundancy,
        now: req.now,
        abandoned_after: ABANDONED_AFTER,
    };
    let verdicts = classify(&entries, &keeps, &rules);
    let (wal, histories) = wal_listing(repo).await?;
    let wal_plan = wal_needed::plan(&entries, &verdicts, &wal, &histories);

    let going: Vec<&BackupId> = verdicts
        .iter()
        .filter(|v| v.delete)
        .map(|v| &v.backup_id)
        .collect();
    // Directories without backup.info, older than the newest backup: what
    // a delete cut short left (a backup being taken writes its backup.info
    // before anything else, and is the newest).
    let newest = objects.with_info.iter().next_back();
    let mut leftovers: Vec<&BackupId> = objects
        .keys
        .keys()
        .filter(|id| !objects.with_info.contains(*id) && newest.is_some_and(|n| *id < n))
        .collect();

    let mut counts = Counts {
        backups: going.len(),
        ..Counts::default()
    };
    for w in &wal_plan.delete {
        match w.name {
            WalFileName::Segment(_) => counts.wal_segments += 1,
            WalFileName::Partial(_) => counts.wal_partials += 1,
            WalFileName::BackupHistory { .. } => counts.backup_labels += 1,
            WalFileName::TimelineHistory(_) => counts.histories += 1,
        }
    }
    if !req.dry_run {
        // Recheck: a backup.info may have appeared since the listing.
        let mut confirmed = Vec::new();
        for id in leftovers {
            if repo
                .store
                .head(&repo.layout.backup_info_key(id))
                .await?
                .is_none()
            {
                confirmed.push(id);
            }
        }
        leftovers = confirmed;
    }
    counts.leftover_directories = leftovers.len();
    let keys_of = |id: &BackupId| objects.keys.get(id).cloned().unwrap_or_default();
    counts.backup_objects = going.iter().map(|id| keys_of(id).len()).sum();
    counts.leftover_objects = leftovers.iter().map(|id| keys_of(id).len()).sum();

    if !req.dry_run {
        // 1. backup.info of every backup that goes.
        let infos: Vec<String> = going
            .iter()
            .map(|id| repo.layout.backup_info_key(id))
            .collect();
        repo.store.delete_many(&infos).await?;
        crate::fault_point::reached("expire-backup-infos-deleted", &infos.join(" "));
        // 2. Their other objects, and the leftovers'.
        let mut rest: Vec<String> = going
            .iter()
            .chain(leftovers.iter())
            .flat_map(|id| keys_of(id))
            .filter(|k| !infos.contains(k))
            .collect();
        rest.sort();
        repo.store.delete_many(&rest).await?;
        for id in going.iter().chain(leftovers.iter()) {
            repo.store
                .abort_unfinished(&repo.layout.backup_prefix(id))
                .await?;
        }
        // 3. WAL no remaining backup needs, oldest first; histories last.
        let keys: Vec<String> = wal_plan.delete.iter().map(|w| w.key.clone()).collect();
        crate::fault_point::reached("expire-deleting-wal", &keys.len().to_string());
        repo.store.delete_many(&keys).await?;
    }

    let report = ExpireReport {
        repository: repo.describe(),
        policy: req.policy,
        minimum_redundancy: req.minimum_redundancy,
        point_of_recoverability: req.policy.point_of_recoverability(req.now),
        dry_run: req.dry_run,
        backups: verdicts,
        wal_boundary: wal_plan.boundary,
        protected: wal_plan.protected,
        deleted: counts,
    };
    let record = ExpireState {
        finished_at: Utc::now(),
        obsolete_backups: report.backups.iter().filter(|v| v.delete).count(),
        dry_run: req.dry_run,
        policy: req.policy.to_string(),
        minimum_redundancy: req.minimum_redundancy,
        backups_kept: report.backups.iter().filter(|v| !v.delete).count(),
        deleted_backups: report
            .backups
            .iter()
            .filter(|v| v.delete)
            .map(|v| v.backup_id.to_string())
            .collect(),
        wal_kept_from: match &report.wal_boundary {
            Boundary::From { segment, .. } => Some(segment.to_string()),
            Boundary::KeepAll { .. } => None,
        },
        deleted: report.deleted.clone(),
    };
    // A summary only: a dry run with read-only credentials still reports.
    if let Err(e) = state::write(repo, StateKind::Expire, &record).await {
        tracing::warn!("could not record the expire state: {e}");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::info::{BackupInfo, BackupStatus};
    use crate::backup::keep::KeepTarget;
    use crate::store::PutOptions;
    use crate::wal::test_segments::fs_repo;
    use crate::wal::SegmentName;
    use bytes::Bytes;
    use chrono::TimeDelta;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn seg(n: u32) -> SegmentName {
        format!("0000000100000000{n:08X}")
            .parse::<WalFileName>()
            .map(|w| match w {
                WalFileName::Segment(s) => s,
                _ => unreachable!(),
            })
            .unwrap()
    }

    async fn put(repo: &Repo, key: String) {
        repo.store
            .put(&key, Bytes::from_static(b"x"), PutOptions::default())
            .await
            .unwrap();
    }

    /// A DONE backup `days_ago` old, WAL segment `n`, with a tar and
    /// pitr's manifest copy.
    async fn backup(repo: &Repo, day: u32, n: u32) -> BackupId {
        let id: BackupId = format!("202611{day:02}T000000").parse().unwrap();
        let mut info = BackupInfo::new(id.clone(), "main");
        info.status = BackupStatus::Done;
        info.timeline = Some(1);
        info.begin_wal = Some(seg(n));
        info.end_wal = Some(seg(n));
        let t = DateTime::parse_from_rfc3339(&format!("2026-11-{day:02}T00:10:00+00:00")).unwrap();
        info.begin_time = Some(t);
        info.end_time = Some(t);
        catalog::write_info(repo, &info, false).await.unwrap();
        put(repo, repo.layout.backup_data_key(&id, ".gz")).await;
        put(repo, repo.layout.backup_manifest_key(&id, ".gz")).await;
        id
    }

    async fn wal(repo: &Repo, to: u32) {
        for n in 1..=to {
            put(
                repo,
                repo.layout.wal_key(&WalFileName::Segment(seg(n)), ".gz"),
            )
            .await;
        }
    }

    async fn keys(repo: &Repo) -> Vec<String> {
        let root = repo.layout.server_root().to_string();
        repo.store
            .list(&root)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key[root.len()..].to_string())
            .filter(|k| !k.starts_with("pitr/state/"))
            .collect()
    }

    fn request(policy: &str, dry_run: bool) -> ExpireRequest {
        ExpireRequest {
            policy: policy.parse().unwrap(),
            minimum_redundancy: 0,
            dry_run,
            now: now(),
        }
    }

    #[tokio::test]
    async fn expires_obsolete_backups_and_the_wal_before_the_oldest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let b1 = backup(&repo, 1, 2).await;
        let b2 = backup(&repo, 5, 4).await;
        let b3 = backup(&repo, 20, 6).await;
        let b4 = backup(&repo, 28, 8).await;
        wal(&repo, 9).await;
        keep::set(&repo, &b1, KeepTarget::Standalone).await.unwrap();
        let before = keys(&repo).await;

        // 2026-11-05 ended 26 days before now; the window of 14 days opens
        // on 11-17: b3 (11-20) is inside, b2 is the base, so nothing goes
        // but the WAL before b2 that the standalone keep b1 does not need.
        let r = expire(&repo, &request("RECOVERY WINDOW OF 2 WEEKS", true))
            .await
            .unwrap();
        let statuses: Vec<&str> = r.backups.iter().map(|v| v.retention.as_str()).collect();
        assert_eq!(statuses, ["KEEP:STANDALONE", "VALID", "VALID", "VALID"]);
        assert_eq!(r.deleted.wal_segments, 2, "segments 1 and 3");
        assert_eq!(keys(&repo).await, before, "a dry run deletes nothing");

        // A one-week window: b3 (11-20) is the base; b2 goes, and WAL 1-5
        // but for b1's segment 2.
        let r = expire(&repo, &request("7d", false)).await.unwrap();
        assert_eq!(r.deleted.backups, 1);
        assert_eq!(r.deleted.backup_objects, 3);
        assert_eq!(r.deleted.wal_segments, 4);
        let after = keys(&repo).await;
        assert!(!after.iter().any(|k| k.contains(b2.as_str())), "{after:?}");
        let wal_left: Vec<&String> = after.iter().filter(|k| k.starts_with("wals/")).collect();
        assert_eq!(
            wal_left,
            [
                "wals/0000000100000000/000000010000000000000002.gz",
                "wals/0000000100000000/000000010000000000000006.gz",
                "wals/0000000100000000/000000010000000000000007.gz",
                "wals/0000000100000000/000000010000000000000008.gz",
                "wals/0000000100000000/000000010000000000000009.gz",
            ]
        );
        for id in [&b1, &b3, &b4] {
            assert!(catalog::read_info(&repo, id).await.unwrap().is_some());
        }
        let st: ExpireState = state::read(&repo, StateKind::Expire)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(st.deleted_backups, [b2.to_string()]);
        assert_eq!(
            st.wal_kept_from.as_deref(),
            Some("000000010000000000000006")
        );
        // Nothing more to do.
        let again = expire(&repo, &request("7d", false)).await.unwrap();
        assert_eq!(again.deleted.objects(), 0, "{:?}", again.deleted);
    }

    #[tokio::test]
    async fn a_run_cut_short_is_finished_by_the_next_and_never_shows_a_backup_without_wal() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let b1 = backup(&repo, 1, 2).await;
        let b2 = backup(&repo, 2, 4).await;
        let b3 = backup(&repo, 3, 6).await;
        wal(&repo, 7).await;
        // What an expire killed after step 1 (backup.info of b1 and b2
        // deleted) and part of step 2 leaves.
        repo.store
            .delete_many(&[
                repo.layout.backup_info_key(&b1),
                repo.layout.backup_info_key(&b2),
                repo.layout.backup_data_key(&b1, ".gz"),
            ])
            .await
            .unwrap();
        // No usable-looking backup lost WAL: only b3 is listed.
        let listed: Vec<BackupId> = catalog::list(&repo)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.info.backup_id)
            .collect();
        assert_eq!(listed, std::slice::from_ref(&b3));
        let r = expire(&repo, &request("REDUNDANCY 1", false))
            .await
            .unwrap();
        assert_eq!(r.deleted.backups, 0);
        assert_eq!(r.deleted.leftover_directories, 2);
        assert_eq!(
            r.deleted.leftover_objects, 3,
            "b1's details, b2's tar and details"
        );
        assert_eq!(r.deleted.wal_segments, 5);
        let after = keys(&repo).await;
        assert!(
            !after
                .iter()
                .any(|k| k.contains(b1.as_str()) || k.contains(b2.as_str())),
            "{after:?}"
        );
        assert!(after.contains(&"wals/0000000100000000/000000010000000000000006.gz".to_string()));
    }

    #[tokio::test]
    async fn an_unreadable_backup_info_stops_everything() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        backup(&repo, 1, 2).await;
        let b2 = backup(&repo, 2, 4).await;
        wal(&repo, 5).await;
        repo.store
            .put(
                &repo.layout.backup_info_key(&b2),
                Bytes::from_static(b"begin_wal=garbage\n"),
                PutOptions::default(),
            )
            .await
            .unwrap();
        let before = keys(&repo).await;
        let e = expire(&repo, &request("REDUNDANCY 1", false))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("backup.info"), "{e}");
        assert_eq!(keys(&repo).await, before);
    }

    #[tokio::test]
    async fn abandoned_and_failed_backups_go_once_a_newer_one_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let failed: BackupId = "20261101T000000".parse().unwrap();
        let mut info = BackupInfo::new(failed.clone(), "main");
        info.status = BackupStatus::Failed;
        catalog::write_info(&repo, &info, false).await.unwrap();
        let b = backup(&repo, 2, 4).await;
        let running: BackupId = "20261201T115900".parse().unwrap();
        let mut info = BackupInfo::new(running.clone(), "main");
        info.begin_time = Some((now() - TimeDelta::minutes(1)).fixed_offset());
        catalog::write_info(&repo, &info, false).await.unwrap();
        wal(&repo, 5).await;
        let r = expire(&repo, &request("REDUNDANCY 1", false))
            .await
            .unwrap();
        let got: Vec<(String, bool)> = r
            .backups
            .iter()
            .map(|v| (v.backup_id.to_string(), v.delete))
            .collect();
        assert_eq!(
            got,
            [
                (failed.to_string(), true),
                (b.to_string(), false),
                (running.to_string(), false)
            ]
        );
        assert!(catalog::read_info(&repo, &running).await.unwrap().is_some());
        assert_eq!(r.deleted.wal_segments, 3);
    }
}
