//! Listings past one page (S3 returns at most 1,000 keys a request), on the
//! real Ceph RGW: the archive index sees every segment, lists from a floor
//! without losing later timelines, and a gap is found across the page edge.

mod common;

use common::s3::Rgw;
use pitr::repo::Repo;
use pitr::restore::archive_index::ArchiveIndex;
use pitr::wal::{SegmentName, TimelineId, WalFileName};

fn seg(tli: u32, n: u32) -> SegmentName {
    SegmentName {
        timeline: TimelineId::new(tli).unwrap(),
        log: n / 256,
        seg: n % 256,
    }
}

#[test]
fn listings_over_a_thousand_keys() {
    let rgw = Rgw::from_env();
    let bucket = rgw.new_bucket("list");
    let cfg = rgw.repo_config(&bucket, "main");
    let repo = Repo::open(&cfg).unwrap();
    let layout = pitr::layout::Layout::new("pg", "main");
    // 1,300 segments of timeline 1 (skipping number 1,100), and 5 of
    // timeline 2 with its history file.
    let mut keys: Vec<String> = (0..1300u32)
        .filter(|n| *n != 1100)
        .map(|n| layout.wal_key(&WalFileName::Segment(seg(1, n)), ".gz"))
        .collect();
    keys.extend((1290..1295).map(|n| layout.wal_key(&WalFileName::Segment(seg(2, n)), ".gz")));
    keys.push(layout.wal_key(&"00000002.history".parse().unwrap(), ""));
    std::thread::scope(|s| {
        for chunk in keys.chunks(keys.len().div_ceil(8)) {
            let rgw = &rgw;
            let bucket = &bucket;
            s.spawn(move || {
                for k in chunk {
                    rgw.put_raw(bucket, k, b"x".to_vec());
                }
            });
        }
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let whole = ArchiveIndex::load(&repo).await.unwrap();
        assert_eq!(whole.segments.len(), 1299 + 5);
        assert_eq!(whole.latest_timeline(TimelineId::new(1).unwrap()).get(), 2);

        let mut index = ArchiveIndex::histories(&repo).await.unwrap();
        index
            .load_segments(&repo, Some(seg(1, 1024)))
            .await
            .unwrap();
        assert_eq!(index.segments.len(), (1024..1300).count() - 1 + 5);
        assert!(index.segments.contains_key(&seg(2, 1294)));
        assert!(!index.segments.contains_key(&seg(1, 1023)));

        // The gap at 1,100 is found: a later segment of timeline 1 exists.
        let later = pitr::wal::locate::later_on_same_timeline(&repo, &seg(1, 1100))
            .await
            .unwrap();
        assert_eq!(later, Some(seg(1, 1101)));
        assert!(pitr::wal::locate::archive_exists(&repo).await.unwrap());
    });
}
