//! The listing walk: each timeline's keys streamed once, in key order,
//! into ranges of segment numbers; nothing per key is kept.

use std::collections::BTreeSet;

use super::checkpoint::TimelineCheckpoint;
use super::report::{ObjectFault, ObjectProblem, ReadCounts};
use crate::error::Result;
use crate::layout::WalKey;
use crate::repo::Repo;
use crate::store::ObjectInfo;
use crate::wal::{SegmentName, TimelineId, WalFileName};

/// What one listed key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Listed {
    /// A whole segment of the walked timeline, by number.
    Segment(SegmentName, u64),
    /// A `.partial` or `.backup` file: WAL, not a segment of the chain.
    OtherWal(WalFileName),
    /// A timeline history file (the walk of histories reads those).
    History,
    /// Under the timeline's prefix but something else.
    Fault(ObjectFault),
}

/// Classifies listed keys for one cluster's segment size.
#[derive(Debug, Clone, Copy)]
pub(super) struct Classifier {
    pub seg_size: u64,
}

impl Classifier {
    pub fn per_log(&self) -> u64 {
        0x1_0000_0000 / self.seg_size
    }

    pub fn classify(&self, repo: &Repo, o: &ObjectInfo) -> Listed {
        let Some(WalKey { name, suffix }) = repo.layout.parse_wal_key(&o.key) else {
            return Listed::Fault(ObjectFault::NotWal);
        };
        if o.size == 0 {
            return Listed::Fault(ObjectFault::Empty);
        }
        match name {
            WalFileName::Segment(s) => {
                if u64::from(s.seg) >= self.per_log() {
                    return Listed::Fault(ObjectFault::ImpossibleName {
                        segment_size: self.seg_size,
                    });
                }
                if suffix.is_empty() && o.size < self.seg_size {
                    return Listed::Fault(ObjectFault::Truncated {
                        stored_size: o.size,
                        segment_size: self.seg_size,
                    });
                }
                Listed::Segment(s, s.segment_number(self.seg_size))
            }
            WalFileName::TimelineHistory(_) => Listed::History,
            other => Listed::OtherWal(other),
        }
    }
}

/// The key prefix of every object of `timeline` under `wals/` (its hash
/// directories; its history file too, which the walk skips).
pub(super) fn timeline_prefix(repo: &Repo, timeline: TimelineId) -> String {
    format!("{}{timeline}", repo.layout.wals_prefix())
}

/// The key after which a listing of `timeline` from segment number
/// `floor` starts: just before the hash directory holding it.
pub(super) fn floor_key(repo: &Repo, timeline: TimelineId, floor: u64, seg_size: u64) -> String {
    let seg = SegmentName::from_number(timeline, floor, seg_size);
    repo.layout
        .wal_dir_prefix(&seg)
        .trim_end_matches('/')
        .to_string()
}

/// Applies one listed object to a timeline's checkpoint.
pub(super) fn account(
    cls: &Classifier,
    repo: &Repo,
    o: ObjectInfo,
    floor: Option<u64>,
    cp: &mut TimelineCheckpoint,
    problems: &mut BTreeSet<ObjectProblem>,
) -> Listed {
    let listed = cls.classify(repo, &o);
    match &listed {
        Listed::Segment(_, n) if floor.is_none_or(|f| *n >= f) => cp.ranges.insert(*n),
        Listed::Fault(fault) => {
            problems.insert(ObjectProblem {
                key: o.key.clone(),
                fault: fault.clone(),
            });
        }
        _ => {}
    }
    if listed != Listed::History && cp.last_key.as_deref().is_none_or(|k| o.key.as_str() > k) {
        cp.last_key = Some(o.key);
    }
    listed
}

/// Lists `timeline` after `start_after` (its checkpoint, or a floor),
/// streaming every key into `cp`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn list_timeline(
    repo: &Repo,
    cls: &Classifier,
    timeline: TimelineId,
    start_after: Option<&str>,
    floor: Option<u64>,
    cp: &mut TimelineCheckpoint,
    problems: &mut BTreeSet<ObjectProblem>,
    read: &mut ReadCounts,
) -> Result<()> {
    let prefix = timeline_prefix(repo, timeline);
    let mut listed = 0u64;
    repo.store
        .list_each(&prefix, start_after, &mut |o| {
            listed += 1;
            account(cls, repo, o, floor, cp, problems);
        })
        .await?;
    read.keys_listed += listed;
    Ok(())
}

/// The timeline of a hash directory key (`…/wals/<TLI><LOG>/`), or None
/// for a directory that is not one.
pub(crate) fn dir_timeline(repo: &Repo, dir: &str) -> Option<TimelineId> {
    let name = dir
        .strip_prefix(repo.layout.wals_prefix().as_str())?
        .strip_suffix('/')?;
    if name.len() != 16
        || !name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return None;
    }
    TimelineId::from_hex(&name[..8])
}
