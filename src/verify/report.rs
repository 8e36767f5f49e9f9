//! What `archive verify` found, as types: printed by the CLI as text or
//! JSON, and summarised into the Verify state record.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::backup::BackupId;
use crate::wal::{Lsn, SegmentName, TimelineId};

/// A stretch of segments of one timeline, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SegmentRange {
    pub first: SegmentName,
    pub last: SegmentName,
    pub segments: u64,
}

impl SegmentRange {
    pub fn new(timeline: TimelineId, r: super::ranges::Range, seg_size: u64) -> Self {
        SegmentRange {
            first: SegmentName::from_number(timeline, r.first, seg_size),
            last: SegmentName::from_number(timeline, r.last, seg_size),
            segments: r.segments(),
        }
    }
}

impl fmt::Display for SegmentRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments == 1 {
            write!(f, "{}", self.first)
        } else {
            write!(
                f,
                "{} to {} ({} segments)",
                self.first, self.last, self.segments
            )
        }
    }
}

/// One timeline of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineReport {
    pub timeline: TimelineId,
    /// The stretches of segments present, oldest first.
    pub ranges: Vec<SegmentRange>,
    /// The stretches missing between them (and between the timeline's fork
    /// point and its first segment): first and last missing segment.
    pub gaps: Vec<SegmentRange>,
}

/// Something wrong with one stored object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ObjectFault {
    /// A stored object of no bytes.
    Empty,
    /// Uncompressed, yet smaller than a segment.
    Truncated { stored_size: u64, segment_size: u64 },
    /// Under `wals/`, but not a WAL file where Barman's layout puts one
    /// (a foreign file, or a segment in the wrong hash directory).
    NotWal,
    /// A segment name impossible for this cluster's segment size.
    ImpossibleName { segment_size: u64 },
    /// Pitr's recorded size differs from the segment size.
    SizeMetadata { recorded: u64, segment_size: u64 },
    /// Decoding failed: checksum, gzip CRC, GCM tag, decompression.
    Damaged { error: String },
    /// The page header names another database system.
    ForeignSystem { found: u64, expected: u64 },
    /// The page header is for another position than the name says.
    Misplaced { page_address: Lsn, expected: Lsn },
    /// Decodes to the wrong number of bytes.
    WrongSize { size: u64, segment_size: u64 },
    /// Not a readable WAL page header or history file.
    Unreadable { error: String },
}

impl ObjectFault {
    /// Found only by reading the object (`--deep`), not by listing it.
    pub fn found_by_deep(&self) -> bool {
        matches!(
            self,
            ObjectFault::SizeMetadata { .. }
                | ObjectFault::Damaged { .. }
                | ObjectFault::ForeignSystem { .. }
                | ObjectFault::Misplaced { .. }
                | ObjectFault::WrongSize { .. }
                | ObjectFault::Unreadable { .. }
        )
    }
}

impl fmt::Display for ObjectFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectFault::Empty => write!(f, "is empty"),
            ObjectFault::Truncated {
                stored_size,
                segment_size,
            } => write!(
                f,
                "is stored uncompressed with {stored_size} bytes, less than a {segment_size}-byte segment: truncated"
            ),
            ObjectFault::NotWal => write!(
                f,
                "is not a WAL file where Barman's layout keeps one (a foreign file, or a segment in the wrong directory)"
            ),
            ObjectFault::ImpossibleName { segment_size } => write!(
                f,
                "names a segment that cannot exist with {segment_size}-byte segments: another cluster's WAL"
            ),
            ObjectFault::SizeMetadata {
                recorded,
                segment_size,
            } => write!(
                f,
                "records a size of {recorded} bytes in its metadata, but segments are {segment_size} bytes"
            ),
            ObjectFault::Damaged { error } => write!(f, "is damaged: {error}"),
            ObjectFault::ForeignSystem { found, expected } => write!(
                f,
                "belongs to database system {found}, not this repository's {expected}"
            ),
            ObjectFault::Misplaced {
                page_address,
                expected,
            } => write!(
                f,
                "starts with a page for LSN {page_address}, but its name says {expected}"
            ),
            ObjectFault::WrongSize { size, segment_size } => {
                write!(f, "decodes to {size} bytes, not {segment_size}")
            }
            ObjectFault::Unreadable { error } => write!(f, "cannot be read as WAL: {error}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectProblem {
    pub key: String,
    #[serde(flatten)]
    pub fault: ObjectFault,
}

/// History files missing or contradicting each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum HistoryProblem {
    /// A timeline after 1 has WAL, or is another's parent, but no history file.
    Missing {
        timeline: TimelineId,
        needed_by: String,
    },
    /// The history file does not parse.
    Unreadable {
        timeline: TimelineId,
        key: String,
        error: String,
    },
    /// A timeline's history disagrees with its parent's.
    Contradicts {
        timeline: TimelineId,
        parent: TimelineId,
        detail: String,
    },
    /// The timeline has segments from before it forked off its parent.
    SegmentsBeforeFork {
        timeline: TimelineId,
        first: SegmentName,
        fork: Lsn,
    },
}

impl fmt::Display for HistoryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryProblem::Missing {
                timeline,
                needed_by,
            } => write!(
                f,
                "{timeline}.history is missing, but {needed_by}: a restore cannot follow timeline {}",
                timeline.get()
            ),
            HistoryProblem::Unreadable {
                timeline: _,
                key,
                error,
            } => write!(f, "{key} cannot be read: {error}"),
            HistoryProblem::Contradicts {
                timeline,
                parent,
                detail,
            } => write!(
                f,
                "{timeline}.history contradicts {parent}.history: {detail}"
            ),
            HistoryProblem::SegmentsBeforeFork {
                timeline,
                first,
                fork,
            } => write!(
                f,
                "timeline {} has segment {first}, before it forked off at {fork} (says {timeline}.history)",
                timeline.get()
            ),
        }
    }
}

/// Whether one backup's WAL is there, and how far a restore from it gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupWal {
    pub backup_id: BackupId,
    pub timeline: TimelineId,
    /// Every segment from the backup's begin to its end is archived.
    pub wal_complete: bool,
    /// The first segment missing, if any, along the path a restore follows.
    pub first_missing: Option<SegmentName>,
    /// Where a restore from this backup becomes consistent (its end).
    pub restorable_from: Lsn,
    /// How far the archived WAL takes it: the end of the last contiguous
    /// segment (None when the backup's own WAL is incomplete).
    pub restorable_to: Option<Lsn>,
    /// The timeline a restore to the latest point ends on.
    pub to_timeline: TimelineId,
    /// The last segment replayed.
    pub last_segment: Option<SegmentName>,
    /// WAL archived after the first missing segment, which a restore from
    /// this backup cannot reach: the archive has a gap.
    pub stopped_by_gap: bool,
}

/// Requests the run made, to show what incremental runs save.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReadCounts {
    /// Keys listed.
    pub keys_listed: u64,
    /// Objects downloaded and decoded (`--deep`, and history files).
    pub objects_read: u64,
    /// Bytes downloaded.
    pub bytes_read: u64,
}

/// How much of the archive this run looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Coverage {
    /// Every key was listed.
    Full,
    /// Only what is new since the checkpoint; what was verified before is
    /// taken from it.
    Incremental,
    /// `--from` or `--timeline`: part of the archive, no checkpoint.
    Partial,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub repository: String,
    pub segment_size: u64,
    pub coverage: Coverage,
    pub deep: bool,
    pub healthy: bool,
    pub timelines: Vec<TimelineReport>,
    pub history_problems: Vec<HistoryProblem>,
    pub object_problems: Vec<ObjectProblem>,
    /// Every DONE backup (empty in a partial run).
    pub backups: Vec<BackupWal>,
    pub read: ReadCounts,
}

impl VerifyReport {
    pub fn gaps(&self) -> usize {
        self.timelines.iter().map(|t| t.gaps.len()).sum()
    }
}
