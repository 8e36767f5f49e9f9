//! `pitr archive verify`: walks the WAL archive and reports, per timeline,
//! the ranges present and every gap; history files missing or
//! contradicting each other; objects whose stored size or metadata does
//! not fit; and for each backup whether its WAL is complete and how far a
//! restore from it can go. `--deep` downloads and checks every object.
//!
//! Incremental: the Verify state record ([`checkpoint`]) keeps what was
//! verified, so a nightly run lists only what is new.

pub mod backups;
pub mod checkpoint;
pub mod deep;
pub mod histories;
pub mod history_check;
pub mod ranges;
pub mod report;
pub mod walk;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{TimeDelta, Utc};

use self::checkpoint::{StoredGap, TimelineCheckpoint, VerifyState, FORMAT};
use self::ranges::Ranges;
use self::report::{
    Coverage, ObjectFault, ObjectProblem, ReadCounts, SegmentRange, TimelineReport, VerifyReport,
};
use self::walk::{dir_timeline, floor_key, list_timeline, Classifier};
use crate::backup::catalog;
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::state::{self, StateKind};
use crate::wal::history::TimelinePath;
use crate::wal::{identity, SegmentName, TimelineId};

/// PostgreSQL's default, for repositories that record no segment size.
const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Only WAL from this segment's position on (a partial walk).
    pub from: Option<SegmentName>,
    /// Only this timeline (a partial walk).
    pub timeline: Option<TimelineId>,
    /// Download and check every object not yet checked.
    pub deep: bool,
    /// Ignore the checkpoint: list (and with `deep`, read) everything.
    pub full: bool,
    /// Walk fully anyway when the last full walk is older than this.
    pub full_after: TimeDelta,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            from: None,
            timeline: None,
            deep: false,
            full: false,
            full_after: TimeDelta::days(7),
        }
    }
}

/// The cluster's segment size: the identity's, else the backups', else
/// PostgreSQL's default; and its system identifier if recorded.
async fn cluster(repo: &Repo) -> Result<(u64, Option<u64>)> {
    if let Some(id) = identity::cached(repo).await? {
        return Ok((id.wal_segment_size, id.system_identifier.parse().ok()));
    }
    let entries = catalog::list(repo).await?;
    let size = entries
        .iter()
        .find_map(|e| e.info.xlog_segment_size)
        .unwrap_or(DEFAULT_SEGMENT_SIZE);
    let system = entries
        .iter()
        .find_map(|e| e.info.systemid.as_deref().and_then(|s| s.parse().ok()));
    Ok((size, system))
}

/// Verifies the archive of `repo`.
pub async fn verify(repo: &Repo, opts: &VerifyOptions) -> Result<VerifyReport> {
    // A mistyped server name or prefix is not a healthy empty archive.
    if !crate::wal::locate::archive_exists(repo).await? {
        return Err(Error::NotFound(format!(
            "{} holds no archive (no pitr identity, no WAL): check --repo / PITR_REPO and \
             --server-name / PITR_SERVER_NAME",
            repo.describe()
        )));
    }
    let (seg_size, system) = cluster(repo).await?;
    let cls = Classifier { seg_size };
    if let Some(from) = &opts.from {
        if u64::from(from.seg) >= cls.per_log() {
            return Err(Error::Config(format!(
                "--from {from} cannot exist with this cluster's {seg_size}-byte segments"
            )));
        }
    }
    let partial = opts.from.is_some() || opts.timeline.is_some();
    let now = Utc::now();
    let previous: Option<VerifyState> = match partial {
        true => None,
        false => state::read::<VerifyState>(repo, StateKind::Verify)
            .await?
            .filter(|s| s.format == FORMAT && s.segment_size == seg_size),
    };
    let stale = |p: &VerifyState| p.last_full_at.is_none_or(|t| now - t >= opts.full_after);
    let coverage = match &previous {
        _ if partial => Coverage::Partial,
        Some(p) if !opts.full && !stale(p) => Coverage::Incremental,
        _ => Coverage::Full,
    };
    let prev_last_full = previous.as_ref().and_then(|p| p.last_full_at);
    // --deep reads every object when asked to (--full) or when no deep run
    // ever did; otherwise it goes on from its checkpoint.
    let reread_all = opts.full && opts.deep;
    let mut last_deep_full_at = match reread_all {
        true => None,
        false => previous.as_ref().and_then(|p| p.last_deep_full_at),
    };
    let read_all_deep = opts.deep && (opts.full || last_deep_full_at.is_none());
    let (mut cps, mut problems, old_histories) = match (&coverage, previous) {
        (Coverage::Incremental, Some(p)) => (
            p.timelines,
            p.object_problems.into_iter().collect::<BTreeSet<_>>(),
            p.histories,
        ),
        (Coverage::Full, Some(p)) if !reread_all => (
            // A full listing starts afresh, but keeps what --deep verified
            // (and found) before, so deep runs go on from there.
            p.timelines
                .into_iter()
                .map(|(t, cp)| {
                    let cp = TimelineCheckpoint {
                        deep_last_key: cp.deep_last_key,
                        ..Default::default()
                    };
                    (t, cp)
                })
                .collect(),
            p.object_problems
                .into_iter()
                .filter(|p| p.fault.found_by_deep())
                .collect(),
            BTreeMap::new(),
        ),
        _ => (BTreeMap::new(), BTreeSet::new(), BTreeMap::new()),
    };
    let mut read = ReadCounts::default();
    let wals = repo.layout.wals_prefix();

    let (histories, seen_histories) =
        histories::read_root(repo, &old_histories, &mut problems, &mut read).await?;

    // The hash directories say which timelines have segments.
    let dirs = repo.store.list_dirs(&wals).await?;
    read.keys_listed += dirs.len() as u64;
    let mut timelines: BTreeSet<TimelineId> = BTreeSet::new();
    for dir in &dirs {
        match dir_timeline(repo, dir) {
            Some(t) => {
                timelines.insert(t);
            }
            None if coverage != Coverage::Incremental => {
                // Not a hash directory: nothing in it is WAL Barman's layout knows.
                let mut n = 0;
                repo.store
                    .list_each(dir, None, &mut |o| {
                        n += 1;
                        problems.insert(ObjectProblem {
                            key: o.key,
                            fault: ObjectFault::NotWal,
                        });
                    })
                    .await?;
                read.keys_listed += n;
            }
            None => {}
        }
    }
    // Timelines whose directories are all gone have no segments any more.
    cps.retain(|t, _| TimelineId::new(*t).is_some_and(|t| timelines.contains(&t)));
    if let Some(only) = opts.timeline {
        timelines.retain(|t| *t == only);
    }

    let floor = opts.from.map(|f| f.segment_number(seg_size));
    for t in &timelines {
        let cp = cps.entry(t.get()).or_default();
        let floor_start = floor.map(|f| floor_key(repo, *t, f, seg_size));
        let start = floor_start.clone().or_else(|| cp.last_key.clone());
        list_timeline(
            repo,
            &cls,
            *t,
            start.as_deref(),
            floor,
            cp,
            &mut problems,
            &mut read,
        )
        .await?;
        if opts.deep {
            let start = match read_all_deep {
                true => floor_start,
                false => floor_start.or_else(|| cp.deep_last_key.clone()),
            };
            deep::walk_timeline(
                repo,
                &cls,
                *t,
                &dirs,
                start.as_deref(),
                floor,
                system,
                cp,
                &mut problems,
                &mut read,
            )
            .await?;
        }
    }
    if read_all_deep && coverage != Coverage::Partial {
        last_deep_full_at = Some(now);
    }

    // What the walk found, by timeline.
    let segments: BTreeMap<TimelineId, Ranges> = cps
        .iter()
        .filter_map(|(t, cp)| Some((TimelineId::new(*t)?, cp.ranges.clone())))
        .filter(|(t, _)| timelines.contains(t))
        .collect();
    let paths: BTreeMap<TimelineId, TimelinePath> = histories
        .iter()
        .filter_map(|(t, h)| Some((*t, h.path.clone().ok()?)))
        .collect();
    let history_problems = history_check::check(&histories, &segments, seg_size);
    let timeline_reports: Vec<TimelineReport> = segments
        .iter()
        .filter(|(_, r)| !r.is_empty())
        .map(|(t, r)| {
            let fork = expected_first(*t, &paths, &segments, seg_size).filter(|_| floor.is_none());
            TimelineReport {
                timeline: *t,
                ranges: r
                    .ranges()
                    .iter()
                    .map(|x| SegmentRange::new(*t, *x, seg_size))
                    .collect(),
                gaps: r
                    .gaps(fork)
                    .into_iter()
                    .map(|x| SegmentRange::new(*t, x, seg_size))
                    .collect(),
            }
        })
        .collect();

    let backups = match coverage {
        Coverage::Partial => Vec::new(),
        _ => catalog::list(repo)
            .await?
            .iter()
            .filter_map(|e| backups::assess(e, &segments, &paths, seg_size))
            .collect(),
    };
    if coverage == Coverage::Full {
        // Findings of earlier --deep runs stand while their object does.
        let mut gone = Vec::new();
        for p in problems.iter().filter(|p| p.fault.found_by_deep()) {
            if repo.store.head(&p.key).await?.is_none() {
                gone.push(p.clone());
            }
        }
        for p in gone {
            problems.remove(&p);
        }
    }
    let object_problems: Vec<ObjectProblem> = problems.into_iter().collect();
    let healthy = timeline_reports.iter().all(|t| t.gaps.is_empty())
        && history_problems.is_empty()
        && object_problems.is_empty()
        && backups.iter().all(|b| b.wal_complete);

    if coverage != Coverage::Partial {
        let record = VerifyState {
            format: FORMAT,
            verified_at: now,
            last_full_at: match coverage {
                Coverage::Full => Some(now),
                _ => prev_last_full,
            },
            last_deep_full_at,
            healthy,
            segment_size: seg_size,
            timelines: cps,
            histories: seen_histories,
            object_problems: object_problems.clone(),
            history_problems: history_problems.iter().map(|p| p.to_string()).collect(),
            gaps: timeline_reports
                .iter()
                .flat_map(|t| {
                    t.gaps.iter().map(|g| StoredGap {
                        timeline: t.timeline.get(),
                        first: g.first.segment_number(seg_size),
                        last: g.last.segment_number(seg_size),
                    })
                })
                .collect(),
            incomplete_backups: backups
                .iter()
                .filter(|b| !b.wal_complete)
                .map(|b| b.backup_id.to_string())
                .collect(),
        };
        state::write(repo, StateKind::Verify, &record).await?;
    }

    Ok(VerifyReport {
        repository: repo.describe(),
        segment_size: seg_size,
        coverage,
        deep: opts.deep,
        healthy,
        timelines: timeline_reports,
        history_problems,
        object_problems,
        backups,
        read,
    })
}

/// Where timeline `t`'s segments should begin: the segment holding its
/// fork point, when the archive still holds its parent's WAL from before
/// the fork (otherwise the older WAL was expired, and a later start is
/// no gap).
fn expected_first(
    t: TimelineId,
    paths: &BTreeMap<TimelineId, TimelinePath>,
    segments: &BTreeMap<TimelineId, Ranges>,
    seg_size: u64,
) -> Option<u64> {
    let path = paths.get(&t)?;
    let [.., parent, own] = path.spans.as_slice() else {
        return None;
    };
    let fork = own.begin.segment_number(seg_size);
    let parent_first = segments.get(&parent.timeline)?.first()?;
    (parent_first < fork).then_some(fork)
}

#[cfg(test)]
mod tests;
