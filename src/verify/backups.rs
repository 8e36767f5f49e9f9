//! For each backup: is the WAL from its start to its end archived, and how
//! far does the archive take a restore from it? The same walk a restore's
//! plan makes (`restore::chain`: segment by segment along the target
//! timeline's ancestry, the switch segment read from the new timeline),
//! done on ranges, so it costs a few steps per range, not per segment.

use std::collections::BTreeMap;

use super::ranges::Ranges;
use super::report::BackupWal;
use crate::backup::catalog::CatalogEntry;
use crate::backup::BackupStatus;
use crate::wal::history::TimelinePath;
use crate::wal::{Lsn, SegmentName, TimelineId};

/// The path a restore to the latest point follows from a backup on
/// `timeline` that ended at `end`: the newest timeline reached by probing
/// history files `timeline + 1`, `+ 2`, ... (as PostgreSQL's `latest`),
/// if it descends from the backup; otherwise the backup's own timeline.
pub(super) fn restore_path(
    paths: &BTreeMap<TimelineId, TimelinePath>,
    timeline: TimelineId,
    end: Lsn,
) -> TimelinePath {
    let own = || {
        paths
            .get(&timeline)
            .cloned()
            .unwrap_or_else(|| TimelinePath::root(timeline))
    };
    let mut latest = timeline;
    while let Some(next) = TimelineId::new(latest.get() + 1).filter(|n| paths.contains_key(n)) {
        latest = next;
    }
    match paths.get(&latest) {
        Some(p) if latest != timeline && p.check_contains(timeline, end).is_ok() => p.clone(),
        _ => own(),
    }
}

/// How far the archived WAL takes a restore from `entry` (a DONE backup
/// with its positions recorded).
pub(super) fn assess(
    entry: &CatalogEntry,
    segments: &BTreeMap<TimelineId, Ranges>,
    paths: &BTreeMap<TimelineId, TimelinePath>,
    seg_size: u64,
) -> Option<BackupWal> {
    let info = &entry.info;
    if info.status != BackupStatus::Done {
        return None;
    }
    let (begin, end) = (info.begin_xlog?, info.end_xlog?);
    let timeline = TimelineId::new(info.timeline?)?;
    let path = restore_path(paths, timeline, end);
    let boundaries: Vec<u64> = path
        .spans
        .iter()
        .map(|s| s.begin.segment_number(seg_size))
        .collect();
    let held = |t: TimelineId, n: u64| segments.get(&t).and_then(|r| r.range_of(n));

    let end_n = end.segment_number(seg_size);
    let mut n = begin.segment_number(seg_size);
    let mut last: Option<SegmentName> = None;
    loop {
        let t = path.timeline_of_segment(n, seg_size);
        let Some(range) = held(t, n) else { break };
        // Stop this stride where the path moves on to the next timeline.
        let stride_end = boundaries
            .iter()
            .copied()
            .filter(|b| *b > n)
            .min()
            .map_or(range.last, |b| range.last.min(b - 1));
        last = Some(SegmentName::from_number(t, stride_end, seg_size));
        n = stride_end + 1;
    }
    let missing = SegmentName::from_number(path.timeline_of_segment(n, seg_size), n, seg_size);
    let complete = n > end_n;
    // Is anything archived on the path after the missing segment?
    let stopped_by_gap = path.spans.iter().enumerate().any(|(i, span)| {
        let lo = (n + 1).max(boundaries[i]);
        let hi = boundaries.get(i + 1).copied().unwrap_or(u64::MAX);
        lo < hi
            && segments.get(&span.timeline).is_some_and(|r| {
                r.contains(lo) || r.next_after(lo - 1).is_some_and(|r| r.first < hi)
            })
    });
    Some(BackupWal {
        backup_id: info.backup_id.clone(),
        timeline,
        wal_complete: complete,
        first_missing: (!complete || stopped_by_gap).then_some(missing),
        restorable_from: end,
        restorable_to: complete.then_some(Lsn(n * seg_size)),
        to_timeline: last.map(|s| s.timeline).unwrap_or(timeline),
        last_segment: last,
        stopped_by_gap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::info::BackupInfo;

    const SEG: u64 = 16 << 20;

    fn tli(n: u32) -> TimelineId {
        TimelineId::new(n).unwrap()
    }

    fn backup(begin: u64, end: u64) -> CatalogEntry {
        let mut info = BackupInfo::new("20261201T000000".parse().unwrap(), "main");
        info.status = BackupStatus::Done;
        info.timeline = Some(1);
        info.begin_xlog = Some(Lsn(begin * SEG + 40));
        info.end_xlog = Some(Lsn(end * SEG + 312));
        CatalogEntry {
            info,
            details: None,
        }
    }

    fn segs(list: &[(u32, &[u64])]) -> BTreeMap<TimelineId, Ranges> {
        list.iter()
            .map(|(t, ns)| {
                let mut r = Ranges::default();
                for n in *ns {
                    r.insert(*n);
                }
                (tli(*t), r)
            })
            .collect()
    }

    #[test]
    fn a_complete_chain_reaches_the_end_of_the_archive() {
        let s = segs(&[(1, &[2, 3, 4, 5])]);
        let a = assess(&backup(2, 3), &s, &BTreeMap::new(), SEG).unwrap();
        assert!(a.wal_complete && !a.stopped_by_gap, "{a:?}");
        assert_eq!(a.first_missing, None);
        assert_eq!(a.restorable_to, Some(Lsn(6 * SEG)));
        assert_eq!(
            a.last_segment.unwrap().to_string(),
            "000000010000000000000005"
        );
    }

    #[test]
    fn a_gap_after_the_backup_stops_it_and_missing_own_wal_makes_it_unusable() {
        let s = segs(&[(1, &[2, 3, 4, 7, 8])]);
        let a = assess(&backup(2, 3), &s, &BTreeMap::new(), SEG).unwrap();
        assert!(a.wal_complete && a.stopped_by_gap, "{a:?}");
        assert_eq!(
            a.first_missing.unwrap().to_string(),
            "000000010000000000000005"
        );
        assert_eq!(a.restorable_to, Some(Lsn(5 * SEG)));
        // A backup after the gap is not affected.
        let later = assess(&backup(7, 7), &s, &BTreeMap::new(), SEG).unwrap();
        assert!(later.wal_complete && !later.stopped_by_gap, "{later:?}");
        // The backup's own end segment is missing.
        let s = segs(&[(1, &[2, 4])]);
        let a = assess(&backup(2, 3), &s, &BTreeMap::new(), SEG).unwrap();
        assert!(!a.wal_complete && a.restorable_to.is_none(), "{a:?}");
        assert_eq!(
            a.first_missing.unwrap().to_string(),
            "000000010000000000000003"
        );
    }

    #[test]
    fn the_chain_follows_the_latest_timeline() {
        // Timeline 2 forked from 1 inside segment 4; 1 went on to 6 (an
        // old primary), which a restore to latest does not read.
        let p2 = TimelinePath::parse(tli(2), "1\t0/4000100\tx\n", "h").unwrap();
        let paths: BTreeMap<_, _> = [(tli(2), p2)].into_iter().collect();
        let s = segs(&[(1, &[2, 3, 4, 5, 6]), (2, &[4, 5, 6, 7])]);
        let a = assess(&backup(2, 3), &s, &paths, SEG).unwrap();
        assert!(a.wal_complete && !a.stopped_by_gap, "{a:?}");
        assert_eq!(a.to_timeline, tli(2));
        assert_eq!(
            a.last_segment.unwrap().to_string(),
            "000000020000000000000007"
        );
        // Without timeline 2's switch segment the restore stops at 3,
        // though timeline 2 goes on: a gap.
        let s = segs(&[(1, &[2, 3, 4]), (2, &[5, 6])]);
        let a = assess(&backup(2, 3), &s, &paths, SEG).unwrap();
        assert!(a.wal_complete && a.stopped_by_gap, "{a:?}");
        assert_eq!(
            a.first_missing.unwrap().to_string(),
            "000000020000000000000004"
        );
    }
}
