//! Names of the files PostgreSQL hands to `archive_command` and asks of
//! `restore_command`: segments, partial segments, backup history files and
//! timeline history files. Parsed once at the edge, valid everywhere inside.

use std::fmt;
use std::str::FromStr;

use super::timeline::{is_upper_hex, TimelineId};
use crate::error::Error;

/// A WAL segment name: timeline, then the segment number split in two
/// 32-bit halves, as 24 upper-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    pub timeline: TimelineId,
    pub log: u32,
    pub seg: u32,
}

impl SegmentName {
    /// The segment number, given the cluster's segment size.
    pub fn segment_number(&self, segment_size: u64) -> u64 {
        let per_log = 0x1_0000_0000u64 / segment_size;
        u64::from(self.log) * per_log + u64::from(self.seg)
    }

    /// The LSN at which this segment starts.
    pub fn start_lsn(&self, segment_size: u64) -> u64 {
        self.segment_number(segment_size) * segment_size
    }

    /// The segment with the given number on the given timeline.
    pub fn from_number(timeline: TimelineId, number: u64, segment_size: u64) -> Self {
        let per_log = 0x1_0000_0000u64 / segment_size;
        SegmentName {
            timeline,
            log: (number / per_log) as u32,
            seg: (number % per_log) as u32,
        }
    }

    /// The first 16 hex digits: Barman's directory for this segment.
    pub fn hash_dir(&self) -> String {
        format!("{}{:08X}", self.timeline, self.log)
    }

    fn parse(s: &str) -> Option<Self> {
        if s.len() != 24 || !is_upper_hex(s) {
            return None;
        }
        Some(SegmentName {
            timeline: TimelineId::from_hex(&s[0..8])?,
            log: u32::from_str_radix(&s[8..16], 16).ok()?,
            seg: u32::from_str_radix(&s[16..24], 16).ok()?,
        })
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }
}

impl serde::Serialize for SegmentName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Any file that goes through the WAL archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalFileName {
    /// `000000010000000000000001`
    Segment(SegmentName),
    /// `000000010000000000000001.partial`
    Partial(SegmentName),
    /// `000000010000000000000001.00000028.backup`
    BackupHistory { segment: SegmentName, offset: u32 },
    /// `00000002.history`
    TimelineHistory(TimelineId),
}

impl WalFileName {
    /// The Barman hash directory, or `None` for timeline history files,
    /// which live in the root of `wals/`.
    pub fn hash_dir(&self) -> Option<String> {
        match self {
            WalFileName::Segment(s) | WalFileName::Partial(s) => Some(s.hash_dir()),
            WalFileName::BackupHistory { segment, .. } => Some(segment.hash_dir()),
            WalFileName::TimelineHistory(_) => None,
        }
    }

    /// True for files whose content is WAL pages (segments and partials).
    pub fn holds_wal_pages(&self) -> bool {
        matches!(self, WalFileName::Segment(_) | WalFileName::Partial(_))
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFileName::Segment(s) => write!(f, "{s}"),
            WalFileName::Partial(s) => write!(f, "{s}.partial"),
            WalFileName::BackupHistory { segment, offset } => {
                write!(f, "{segment}.{offset:08X}.backup")
            }
            WalFileName::TimelineHistory(t) => write!(f, "{t}.history"),
        }
    }
}

impl FromStr for WalFileName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let parsed = if let Some(seg) = s.strip_suffix(".partial") {
            SegmentName::parse(seg).map(WalFileName::Partial)
        } else if let Some(rest) = s.strip_suffix(".backup") {
            rest.split_once('.').and_then(|(seg, off)| {
                let segment = SegmentName::parse(seg)?;
                if off.len() != 8 || !is_upper_hex(off) {
                    return None;
                }
                let offset = u32::from_str_radix(off, 16).ok()?;
                Some(WalFileName::BackupHistory { segment, offset })
            })
        } else if let Some(tli) = s.strip_suffix(".history") {
            TimelineId::from_hex(tli).map(WalFileName::TimelineHistory)
        } else {
            SegmentName::parse(s).map(WalFileName::Segment)
        };
        parsed.ok_or_else(|| {
            Error::Config(format!(
                "'{s}' is not a WAL file name: expected a segment (24 upper-case hex digits, \
                 e.g. 000000010000000000000001), SEGMENT.partial, SEGMENT.OFFSET.backup \
                 or TIMELINE.history (e.g. 00000002.history)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> WalFileName {
        s.parse().unwrap()
    }

    #[test]
    fn round_trips_every_kind() {
        for s in [
            "000000010000000000000001",
            "0000000A00000012000000FF",
            "000000010000000000000002.partial",
            "000000010000000000000002.00000028.backup",
            "00000002.history",
        ] {
            assert_eq!(p(s).to_string(), s);
        }
    }

    #[test]
    fn hash_dir_is_first_16_digits() {
        assert_eq!(
            p("0000000A00000012000000FF").hash_dir().unwrap(),
            "0000000A00000012"
        );
        assert_eq!(
            p("000000010000000300000002.00000028.backup")
                .hash_dir()
                .unwrap(),
            "0000000100000003"
        );
        assert_eq!(p("00000002.history").hash_dir(), None);
    }

    #[test]
    fn rejects_bad_names() {
        for s in [
            "",
            "00000001000000000000001",
            "000000010000000000000001.gz",
            "00000000.history",
            "0000000100000000000000aa",
            "../00000001.history",
            "000000010000000000000001.0028.backup",
            "RECOVERYXLOG",
        ] {
            let e = s.parse::<WalFileName>().unwrap_err();
            assert!(e.to_string().contains("is not a WAL file name"), "{s}");
        }
    }

    #[test]
    fn segment_numbers_follow_segment_size() {
        let s = match p("000000010000000100000002") {
            WalFileName::Segment(s) => s,
            _ => unreachable!(),
        };
        assert_eq!(s.segment_number(16 << 20), 256 + 2);
        assert_eq!(s.start_lsn(16 << 20), 0x1_0200_0000);
        let back = SegmentName::from_number(s.timeline, 258, 16 << 20);
        assert_eq!(back, s);
        // 64 MiB segments: 64 segments per 4 GiB "log".
        assert_eq!(s.segment_number(64 << 20), 64 + 2);
    }
}
