//! `archive verify` on a local-directory repository: gaps, incremental
//! walks, deep reads, foreign objects, history files and backups.

use std::path::Path;

use super::report::ObjectFault;
use super::*;
use crate::backup::info::{BackupInfo, BackupStatus};
use crate::wal::push::push;
use crate::wal::test_segments::{fs_repo, write_segment, TEST_SEGMENT_SIZE};
use crate::wal::{Lsn, WalFileName};

const SYSTEM: u64 = 7_000_000_000_000_000_042;

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    wal: std::path::PathBuf,
    repo: Repo,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let wal = dir.path().join("wal");
    std::fs::create_dir_all(&wal).unwrap();
    let repo = fs_repo(&root);
    Fixture {
        _dir: dir,
        root,
        wal,
        repo,
    }
}

impl Fixture {
    async fn push(&self, timeline: u32, numbers: impl IntoIterator<Item = u64>) {
        for n in numbers {
            push(&self.repo, &write_segment(&self.wal, timeline, n, SYSTEM))
                .await
                .unwrap();
        }
    }

    fn key(&self, timeline: u32, n: u64) -> String {
        let s = seg(timeline, n);
        self.repo.layout.wal_key(&WalFileName::Segment(s), ".gz")
    }

    fn path(&self, key: &str) -> std::path::PathBuf {
        self.root.join(key)
    }

    async fn backup(&self, id: &str, begin: u64, end: u64) {
        let mut info = BackupInfo::new(id.parse().unwrap(), "main");
        info.status = BackupStatus::Done;
        info.timeline = Some(1);
        info.begin_xlog = Some(Lsn(begin * TEST_SEGMENT_SIZE + 40));
        info.end_xlog = Some(Lsn(end * TEST_SEGMENT_SIZE + 312));
        info.xlog_segment_size = Some(TEST_SEGMENT_SIZE);
        catalog::write_info(&self.repo, &info, false).await.unwrap();
    }

    async fn history(&self, timeline: u32, text: &str) {
        let name = WalFileName::TimelineHistory(TimelineId::new(timeline).unwrap());
        let path = self.wal.join(name.to_string());
        std::fs::write(&path, text).unwrap();
        push(&self.repo, &path).await.unwrap();
    }
}

fn seg(timeline: u32, n: u64) -> SegmentName {
    SegmentName::from_number(TimelineId::new(timeline).unwrap(), n, TEST_SEGMENT_SIZE)
}

fn opts() -> VerifyOptions {
    VerifyOptions::default()
}

fn gaps(r: &VerifyReport) -> Vec<String> {
    r.timelines
        .iter()
        .flat_map(|t| t.gaps.iter().map(|g| format!("{}-{}", g.first, g.last)))
        .collect()
}

fn remove(path: &Path) {
    std::fs::remove_file(path).unwrap();
}

#[tokio::test]
async fn a_clean_archive_is_one_range_and_a_deleted_segment_is_exactly_one_gap() {
    let f = fixture();
    f.push(1, 1..=8).await;
    // A segment in the second hash directory (4096 1 MiB segments each).
    f.push(1, [4096]).await;
    f.backup("20261201T000000", 2, 3).await;
    let r = verify(&f.repo, &opts()).await.unwrap();
    assert!(!r.healthy, "4096 is far after 8: {r:?}");
    assert_eq!(
        gaps(&r),
        ["000000010000000000000009-000000010000000000000FFF"]
    );

    let f = fixture();
    f.push(1, 1..=8).await;
    f.backup("20261201T000000", 2, 3).await;
    f.backup("20261201T000500", 6, 6).await;
    let r = verify(&f.repo, &opts()).await.unwrap();
    assert!(r.healthy, "{r:?}");
    assert_eq!(r.coverage, Coverage::Full);
    assert_eq!(r.timelines.len(), 1);
    assert_eq!(r.timelines[0].ranges.len(), 1);
    assert_eq!(r.timelines[0].ranges[0].segments, 8);
    assert!(r
        .backups
        .iter()
        .all(|b| b.wal_complete && !b.stopped_by_gap));

    // Delete segment 5: the incremental run lists only after its
    // checkpoint and cannot see it; a full walk names exactly that gap,
    // and the first backup, whose restore would cross it, stops there.
    remove(&f.path(&f.key(1, 5)));
    let r = verify(&f.repo, &opts()).await.unwrap();
    assert_eq!(r.coverage, Coverage::Incremental);
    assert!(
        r.healthy,
        "as documented, incremental runs miss old deletions"
    );
    let r = verify(
        &f.repo,
        &VerifyOptions {
            full: true,
            ..opts()
        },
    )
    .await
    .unwrap();
    assert!(!r.healthy);
    assert_eq!(
        gaps(&r),
        ["000000010000000000000005-000000010000000000000005"]
    );
    let first = &r.backups[0];
    assert!(first.wal_complete && first.stopped_by_gap, "{first:?}");
    assert_eq!(
        first.first_missing.unwrap().to_string(),
        "000000010000000000000005"
    );
    assert_eq!(first.restorable_to, Some(Lsn(5 * TEST_SEGMENT_SIZE)));
    let second = &r.backups[1];
    assert!(second.wal_complete && !second.stopped_by_gap, "{second:?}");

    // The gap is remembered: the next incremental run still reports it.
    let r = verify(&f.repo, &opts()).await.unwrap();
    assert_eq!(r.coverage, Coverage::Incremental);
    assert_eq!(gaps(&r).len(), 1);
    let saved: VerifyState = state::read(&f.repo, StateKind::Verify)
        .await
        .unwrap()
        .unwrap();
    assert!(!saved.healthy);
}

#[tokio::test]
async fn a_second_run_lists_only_what_is_new() {
    let f = fixture();
    f.push(1, 1..=20).await;
    let first = verify(&f.repo, &opts()).await.unwrap();
    assert!(first.healthy);
    assert!(first.read.keys_listed >= 20, "{:?}", first.read);
    f.push(1, 21..=23).await;
    let second = verify(&f.repo, &opts()).await.unwrap();
    assert_eq!(second.coverage, Coverage::Incremental);
    // Three new segments, the root listing (no history files) and one
    // hash directory.
    assert_eq!(second.read.keys_listed, 3 + 1, "{:?}", second.read);
    assert_eq!(second.timelines[0].ranges[0].segments, 23);
    // A full walk once the last one is too old.
    let stale = verify(
        &f.repo,
        &VerifyOptions {
            full_after: TimeDelta::zero(),
            ..opts()
        },
    )
    .await
    .unwrap();
    assert_eq!(stale.coverage, Coverage::Full);
    assert!(stale.read.keys_listed >= 23);
}

#[tokio::test]
async fn deep_reads_every_object_once_and_catches_damage_the_listing_cannot() {
    let f = fixture();
    f.push(1, 1..=6).await;
    let shallow = verify(&f.repo, &opts()).await.unwrap();
    assert!(shallow.healthy);
    // Same size, other bytes: a listing cannot tell.
    let victim = f.path(&f.key(1, 3));
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&victim, &bytes).unwrap();
    let r = verify(
        &f.repo,
        &VerifyOptions {
            full: true,
            ..opts()
        },
    )
    .await
    .unwrap();
    assert!(r.healthy, "a shallow walk reads no object");

    let deep = VerifyOptions {
        deep: true,
        ..opts()
    };
    let r = verify(&f.repo, &deep).await.unwrap();
    assert!(!r.healthy);
    assert_eq!(r.read.objects_read, 6, "{:?}", r.read);
    assert_eq!(r.object_problems.len(), 1, "{:?}", r.object_problems);
    assert_eq!(r.object_problems[0].key, f.key(1, 3));
    assert!(matches!(
        r.object_problems[0].fault,
        ObjectFault::Damaged { .. }
    ));
    // The next deep run reads only new objects, and keeps the finding.
    f.push(1, [7]).await;
    let r = verify(&f.repo, &deep).await.unwrap();
    assert_eq!(r.read.objects_read, 1, "{:?}", r.read);
    assert_eq!(r.object_problems.len(), 1);
    // Repaired: a deep full run reads everything again and finds it clean.
    std::fs::write(&victim, {
        bytes[mid] ^= 0x55;
        &bytes
    })
    .unwrap();
    let r = verify(
        &f.repo,
        &VerifyOptions {
            deep: true,
            full: true,
            ..opts()
        },
    )
    .await
    .unwrap();
    assert!(r.healthy, "{:?}", r.object_problems);
    assert_eq!(r.read.objects_read, 7);
}

#[tokio::test]
async fn foreign_segments_and_stray_objects_are_named() {
    let f = fixture();
    f.push(1, 1..=3).await;
    // Another system's segment stored under this server by hand.
    let other = f.wal.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let foreign = write_segment(&other, 1, 4, 99);
    let key = f.key(1, 4);
    std::fs::create_dir_all(f.path(&key).parent().unwrap()).unwrap();
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&std::fs::read(&foreign).unwrap()).unwrap();
        e.finish().unwrap()
    };
    std::fs::write(f.path(&key), gz).unwrap();
    // A file that is not WAL, and a truncated uncompressed segment.
    let stray = format!("{}0000000100000000/notes.txt", f.repo.layout.wals_prefix());
    std::fs::write(f.path(&stray), "x").unwrap();
    let short = f.repo.layout.wal_key(&WalFileName::Segment(seg(1, 5)), "");
    std::fs::write(f.path(&short), vec![0u8; 4096]).unwrap();

    let r = verify(&f.repo, &opts()).await.unwrap();
    let faults: Vec<(String, String)> = r
        .object_problems
        .iter()
        .map(|p| (p.key.clone(), p.fault.to_string()))
        .collect();
    assert_eq!(faults.len(), 2, "{faults:?}");
    assert!(faults.iter().any(|(k, _)| *k == stray), "{faults:?}");
    assert!(
        faults
            .iter()
            .any(|(k, w)| *k == short && w.contains("truncated")),
        "{faults:?}"
    );
    let r = verify(
        &f.repo,
        &VerifyOptions {
            deep: true,
            ..opts()
        },
    )
    .await
    .unwrap();
    assert!(
        r.object_problems.iter().any(
            |p| p.key == key && matches!(p.fault, ObjectFault::ForeignSystem { found: 99, .. })
        ),
        "{:?}",
        r.object_problems
    );
}

#[tokio::test]
async fn timelines_need_their_history_files() {
    let f = fixture();
    f.push(1, 1..=4).await;
    // Timeline 2 forked inside segment 3; timeline 3 has no history.
    f.history(2, "1\t0/300100\tno recovery target specified\n")
        .await;
    f.push(2, 3..=5).await;
    f.push(3, [6]).await;
    let r = verify(&f.repo, &opts()).await.unwrap();
    let text: Vec<String> = r.history_problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].starts_with("00000003.history is missing"),
        "{text:?}"
    );
    assert!(!r.healthy);
    assert_eq!(r.timelines.len(), 3);

    // Timeline 2's switch segment deleted: a gap at its start, since
    // timeline 1 still holds WAL from before the fork.
    let f = fixture();
    f.push(1, 1..=4).await;
    f.history(2, "1\t0/300100\tno recovery target specified\n")
        .await;
    f.push(2, 4..=5).await;
    let r = verify(&f.repo, &opts()).await.unwrap();
    assert_eq!(
        gaps(&r),
        ["000000020000000000000003-000000020000000000000003"]
    );
}

#[tokio::test]
async fn partial_walks_leave_the_checkpoint_alone() {
    let f = fixture();
    f.push(1, 1..=5).await;
    let r = verify(
        &f.repo,
        &VerifyOptions {
            from: Some(seg(1, 3)),
            ..opts()
        },
    )
    .await
    .unwrap();
    assert_eq!(r.coverage, Coverage::Partial);
    assert_eq!(r.timelines[0].ranges[0].first, seg(1, 3));
    assert!(r.backups.is_empty());
    assert!(state::read::<VerifyState>(&f.repo, StateKind::Verify)
        .await
        .unwrap()
        .is_none());
    let e = verify(
        &f.repo,
        &VerifyOptions {
            from: Some(SegmentName {
                seg: 0x1000,
                ..seg(1, 0)
            }),
            ..opts()
        },
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("cannot exist"), "{e}");
}

#[tokio::test]
async fn deep_findings_survive_shallow_full_walks_until_the_object_is_gone() {
    let f = fixture();
    f.push(1, 1..=4).await;
    let victim = f.path(&f.key(1, 2));
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&victim, &bytes).unwrap();
    let deep = VerifyOptions {
        deep: true,
        ..opts()
    };
    assert_eq!(
        verify(&f.repo, &deep).await.unwrap().object_problems.len(),
        1
    );
    let full = VerifyOptions {
        full: true,
        ..opts()
    };
    let r = verify(&f.repo, &full).await.unwrap();
    assert_eq!(r.object_problems.len(), 1, "a listing cannot clear it");
    assert!(!r.healthy);
    // Once the object is deleted, a full walk drops the finding (and
    // names the gap instead).
    remove(&victim);
    let r = verify(&f.repo, &full).await.unwrap();
    assert!(r.object_problems.is_empty(), "{:?}", r.object_problems);
    assert_eq!(
        gaps(&r),
        ["000000010000000000000002-000000010000000000000002"]
    );
    // The deep checkpoint survived the shallow full walks: nothing new.
    let r = verify(&f.repo, &deep).await.unwrap();
    assert_eq!(r.read.objects_read, 0, "{:?}", r.read);
}

#[tokio::test]
async fn no_archive_at_all_is_an_error_not_a_healthy_archive() {
    let f = fixture();
    let e = verify(&f.repo, &opts()).await.unwrap_err();
    assert_eq!(e.kind(), crate::error::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("--server-name"), "{e}");
}

#[tokio::test]
async fn a_segment_whose_header_lies_about_the_segment_size_is_named() {
    let f = fixture();
    f.push(1, 1..=3).await;
    // Segment 2, rewritten by hand: right size, right place, but a page
    // header that says segments are 4 times larger.
    let key = f.key(1, 2);
    let plain = std::fs::read(write_segment(&f.wal, 1, 2, SYSTEM)).unwrap();
    let mut lying = plain.clone();
    let claimed = (4 * plain.len()) as u32;
    lying[32..36].copy_from_slice(&claimed.to_le_bytes());
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&lying).unwrap();
        e.finish().unwrap()
    };
    std::fs::write(f.path(&key), gz).unwrap();
    let _ = std::fs::remove_file(f.path(".pitr-meta").join(format!("{key}.json")));
    let r = verify(
        &f.repo,
        &VerifyOptions {
            deep: true,
            full: true,
            ..opts()
        },
    )
    .await
    .unwrap();
    assert!(!r.healthy);
    assert_eq!(r.object_problems.len(), 1, "{:?}", r.object_problems);
    assert_eq!(r.object_problems[0].key, key);
    let what = r.object_problems[0].fault.to_string();
    assert!(what.contains("page header says segments are"), "{what}");
}
