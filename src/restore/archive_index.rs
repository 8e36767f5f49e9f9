//! What the WAL archive holds, from one listing of `wals/`: every whole
//! segment (under any Barman suffix) with its size and archive time, and
//! which timelines have history files.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::wal::history::TimelinePath;
use crate::wal::{locate, SegmentName, TimelineId, WalFileName};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchivedSegment {
    pub stored_size: u64,
    /// When the store received it: every commit in it happened before.
    pub archived_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub struct ArchiveIndex {
    pub segments: BTreeMap<SegmentName, ArchivedSegment>,
    /// Timelines with a history file, and its key.
    pub histories: BTreeMap<TimelineId, String>,
    /// Segments were listed from this segment's hash directory on (every
    /// timeline sorting after it included); `None`: the whole archive.
    pub listed_from: Option<SegmentName>,
}

impl ArchiveIndex {
    /// The whole archive: history files and every segment.
    pub async fn load(repo: &Repo) -> Result<ArchiveIndex> {
        let mut index = ArchiveIndex::histories(repo).await?;
        index.load_segments(repo, None).await?;
        Ok(index)
    }

    /// The history files only (one shallow listing of `wals/`); segments
    /// come with [`ArchiveIndex::load_segments`].
    pub async fn histories(repo: &Repo) -> Result<ArchiveIndex> {
        let mut index = ArchiveIndex::default();
        for o in repo.store.list_shallow(&repo.layout.wals_prefix()).await? {
            if let Some(WalFileName::TimelineHistory(t)) =
                repo.layout.parse_wal_key(&o.key).map(|k| k.name)
            {
                index.histories.insert(t, o.key);
            }
        }
        Ok(index)
    }

    /// Lists the segments from `from`'s hash directory on (`None`: all),
    /// streaming the listing into the index. A restore needs nothing older
    /// than its backup's first segment, and later timelines sort after
    /// earlier ones, so the listing skips the archive's older part.
    pub async fn load_segments(&mut self, repo: &Repo, from: Option<SegmentName>) -> Result<()> {
        let prefix = repo.layout.wals_prefix();
        let start_after = from.map(|s| repo.layout.wal_dir_prefix(&s));
        // "…/wals/<dir>" sorts just before every key in "…/wals/<dir>/".
        let start_after = start_after.as_deref().map(|p| p.trim_end_matches('/'));
        let mut segments = BTreeMap::new();
        let layout = &repo.layout;
        repo.store
            .list_each(&prefix, start_after, &mut |o| {
                if let Some(WalFileName::Segment(seg)) =
                    layout.parse_wal_key(&o.key).map(|k| k.name)
                {
                    segments.insert(
                        seg,
                        ArchivedSegment {
                            stored_size: o.size,
                            archived_at: o.last_modified,
                        },
                    );
                }
            })
            .await?;
        self.segments = segments;
        self.listed_from = from;
        Ok(())
    }

    /// Whether the segments listed include `segment`'s part of the archive.
    pub fn covers(&self, segment: &SegmentName) -> bool {
        self.listed_from
            .is_none_or(|f| segment.hash_dir() >= f.hash_dir())
    }

    /// The newest timeline reachable from `from` the way PostgreSQL finds
    /// `latest`: probing history files `from + 1`, `from + 2`, ... until one
    /// is missing.
    pub fn latest_timeline(&self, from: TimelineId) -> TimelineId {
        let mut t = from;
        while let Some(next) =
            TimelineId::new(t.get() + 1).filter(|n| self.histories.contains_key(n))
        {
            t = next;
        }
        t
    }

    /// Every timeline the archive knows of, through segments or history files.
    pub fn timelines(&self) -> BTreeSet<TimelineId> {
        self.segments
            .keys()
            .map(|s| s.timeline)
            .chain(self.histories.keys().copied())
            .collect()
    }

    /// The ancestry of `timeline`, read from its history file.
    pub async fn path(&self, repo: &Repo, timeline: TimelineId) -> Result<TimelinePath> {
        let Some(key) = self.histories.get(&timeline) else {
            if timeline.get() == 1 {
                return Ok(TimelinePath::root(timeline));
            }
            return Err(Error::NotFound(format!(
                "timeline {} has no history file ({timeline}.history) in {}: it was never \
                 archived; timelines known: {}",
                timeline.get(),
                repo.describe(),
                self.timelines()
                    .iter()
                    .map(|t| t.get().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let name = WalFileName::TimelineHistory(timeline);
        let obj = locate::open(repo, &name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("{key} vanished while being read")))?;
        let (_, text) = repo.decode(obj, Vec::new()).await?;
        TimelinePath::parse(timeline, &String::from_utf8_lossy(&text), key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PutOptions;

    fn seg(tli: u32, log: u32, seg: u32) -> SegmentName {
        SegmentName {
            timeline: TimelineId::new(tli).unwrap(),
            log,
            seg,
        }
    }

    #[tokio::test]
    async fn lists_only_from_the_floor_and_always_every_history_file() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::wal::test_segments::fs_repo(dir.path());
        let put = |key: String| {
            let store = &repo.store;
            async move {
                store
                    .put(&key, bytes::Bytes::from_static(b"x"), PutOptions::default())
                    .await
                    .unwrap();
            }
        };
        let all = [
            seg(1, 0, 1),
            seg(1, 0, 2),
            seg(1, 1, 0),
            seg(1, 2, 7),
            seg(2, 0, 9),
            seg(3, 1, 1),
        ];
        for s in all {
            put(repo.layout.wal_key(&WalFileName::Segment(s), ".gz")).await;
        }
        for t in [2, 3] {
            let h = WalFileName::TimelineHistory(TimelineId::new(t).unwrap());
            put(repo.layout.wal_key(&h, "")).await;
        }
        // A .partial and a backup history file are not segments.
        put(format!(
            "{}.partial",
            repo.layout.wal_key(&WalFileName::Segment(seg(1, 2, 8)), "")
        ))
        .await;

        let whole = ArchiveIndex::load(&repo).await.unwrap();
        assert_eq!(whole.segments.keys().copied().collect::<Vec<_>>(), all);
        assert_eq!(whole.histories.len(), 2);

        let mut index = ArchiveIndex::histories(&repo).await.unwrap();
        assert!(index.segments.is_empty());
        assert_eq!(index.latest_timeline(TimelineId::new(1).unwrap()).get(), 3);
        index
            .load_segments(&repo, Some(seg(1, 1, 5)))
            .await
            .unwrap();
        assert_eq!(
            index.segments.keys().copied().collect::<Vec<_>>(),
            [seg(1, 1, 0), seg(1, 2, 7), seg(2, 0, 9), seg(3, 1, 1)],
            "from the floor's hash directory on, later timelines included"
        );
        assert!(index.covers(&seg(1, 1, 0)) && index.covers(&seg(2, 0, 0)));
        assert!(!index.covers(&seg(1, 0, 2)));
        index
            .load_segments(&repo, Some(seg(1, 0, 2)))
            .await
            .unwrap();
        assert_eq!(index.segments.len(), all.len());
    }
}
