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
}

impl ArchiveIndex {
    pub async fn load(repo: &Repo) -> Result<ArchiveIndex> {
        let prefix = repo.layout.wals_prefix();
        let mut index = ArchiveIndex::default();
        for o in repo.store.list(&prefix).await? {
            match repo.layout.parse_wal_key(&o.key).map(|k| k.name) {
                Some(WalFileName::Segment(seg)) => {
                    index.segments.insert(
                        seg,
                        ArchivedSegment {
                            stored_size: o.size,
                            archived_at: o.last_modified,
                        },
                    );
                }
                Some(WalFileName::TimelineHistory(t)) => {
                    index.histories.insert(t, o.key.clone());
                }
                _ => {}
            }
        }
        Ok(index)
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
        let compression = crate::codec::Compression::for_suffix(
            repo.layout
                .wal_suffix_of(&name, &obj.info.key)
                .unwrap_or(""),
            &obj.info.key,
        )?;
        let (_, text) =
            crate::transfer::download(obj, compression, repo.codec.key.clone(), Vec::new()).await?;
        TimelinePath::parse(timeline, &String::from_utf8_lossy(&text), key)
    }
}
