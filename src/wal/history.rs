//! Timeline history files (`00000003.history`): which timelines a timeline
//! descends from, and the LSN where each one forked off.

use crate::error::Error;
use crate::wal::{Lsn, TimelineId};

/// One stretch of a timeline's ancestry: WAL of `timeline` from `begin`
/// (inclusive) to `end` (exclusive; `None` for the timeline itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineSpan {
    pub timeline: TimelineId,
    pub begin: Lsn,
    pub end: Option<Lsn>,
}

/// The ancestry of `timeline`, oldest first, ending with the timeline itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelinePath {
    pub spans: Vec<TimelineSpan>,
}

impl TimelinePath {
    /// The path of a timeline without a history file (timeline 1).
    pub fn root(timeline: TimelineId) -> Self {
        TimelinePath {
            spans: vec![TimelineSpan {
                timeline,
                begin: Lsn(0),
                end: None,
            }],
        }
    }

    /// Parses the content of `<timeline>.history`.
    pub fn parse(timeline: TimelineId, text: &str, what: &str) -> Result<Self, Error> {
        let mut spans = Vec::new();
        let mut begin = Lsn(0);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || {
                Error::Corrupt(format!(
                    "{what}, line {}: '{line}' is not 'TLI<tab>LSN<tab>reason'",
                    n + 1
                ))
            };
            let mut fields = line.split_whitespace();
            let parent = fields
                .next()
                .and_then(|t| t.parse::<u32>().ok())
                .and_then(TimelineId::new)
                .ok_or_else(bad)?;
            let switch: Lsn = fields.next().and_then(|l| l.parse().ok()).ok_or_else(bad)?;
            let refuse = |why: String| {
                Error::Corrupt(format!(
                    "{what}, line {}: '{line}': {why}: the history file is damaged",
                    n + 1
                ))
            };
            if parent >= timeline {
                return Err(refuse(format!(
                    "timeline {timeline} cannot descend from timeline {parent} (itself or a later one)"
                )));
            }
            if let Some(prev) = spans.last().map(|s: &TimelineSpan| s.timeline) {
                if parent <= prev {
                    return Err(refuse(format!(
                        "timeline {parent} comes after timeline {prev}: ancestors are listed \
                         oldest first, once each (a loop?)"
                    )));
                }
            }
            if switch < begin {
                return Err(refuse(format!(
                    "the switch point {switch} is before the previous one, {begin}"
                )));
            }
            spans.push(TimelineSpan {
                timeline: parent,
                begin,
                end: Some(switch),
            });
            begin = switch;
        }
        spans.push(TimelineSpan {
            timeline,
            begin,
            end: None,
        });
        Ok(TimelinePath { spans })
    }

    pub fn target(&self) -> TimelineId {
        self.spans
            .last()
            .expect("a path has its own timeline")
            .timeline
    }

    /// The timeline that holds `lsn` on this path.
    pub fn timeline_at(&self, lsn: Lsn) -> TimelineId {
        self.spans
            .iter()
            .find(|s| s.end.is_none_or(|e| lsn < e))
            .map(|s| s.timeline)
            .unwrap_or_else(|| self.target())
    }

    /// The timeline PostgreSQL reads segment number `segno` from: the newest
    /// on the path that had begun by that segment (the segment holding a
    /// switch point is read from the new timeline).
    pub fn timeline_of_segment(&self, segno: u64, seg_size: u64) -> TimelineId {
        self.spans
            .iter()
            .rev()
            .find(|s| s.begin.segment_number(seg_size) <= segno)
            .map(|s| s.timeline)
            .unwrap_or(self.spans[0].timeline)
    }

    /// Whether a backup on `timeline` that ends at `end` lies on this path:
    /// its timeline is an ancestor (or the target) and it ended before the
    /// path left that timeline. Otherwise, the LSN where the path forked.
    pub fn check_contains(&self, timeline: TimelineId, end: Lsn) -> Result<(), Option<Lsn>> {
        match self.spans.iter().find(|s| s.timeline == timeline) {
            None => Err(None),
            Some(s) => match s.end {
                Some(fork) if end > fork => Err(Some(fork)),
                _ => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tli(n: u32) -> TimelineId {
        TimelineId::new(n).unwrap()
    }

    #[test]
    fn parses_a_history_file() {
        let text = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000A28\tbefore 2026-11-22 04:00:00+00\n";
        let p = TimelinePath::parse(tli(3), text, "00000003.history").unwrap();
        assert_eq!(p.spans.len(), 3);
        assert_eq!(p.timeline_at(Lsn(0x2FF_FFFF)), tli(1));
        assert_eq!(p.timeline_at(Lsn(0x300_0000)), tli(2));
        assert_eq!(p.timeline_at(Lsn(0x600_0000)), tli(3));
        let seg = 16 << 20;
        assert_eq!(p.timeline_of_segment(2, seg), tli(1));
        assert_eq!(p.timeline_of_segment(3, seg), tli(2));
        assert_eq!(
            p.timeline_of_segment(5, seg),
            tli(3),
            "the switch segment comes from the new timeline"
        );
        assert!(p.check_contains(tli(1), Lsn(0x200_0000)).is_ok());
        assert_eq!(
            p.check_contains(tli(1), Lsn(0x400_0000)),
            Err(Some(Lsn(0x300_0000)))
        );
        assert_eq!(p.check_contains(tli(4), Lsn(0)), Err(None));
    }

    #[test]
    fn refuses_nonsense() {
        assert!(TimelinePath::parse(tli(2), "x\ty\n", "h").is_err());
        assert!(
            TimelinePath::parse(tli(2), "3\t0/1\tr\n", "h").is_err(),
            "parent must be older"
        );
    }

    #[test]
    fn refuses_loops_self_and_future_parents_with_a_clear_error() {
        for (text, why) in [
            ("3\t0/1000000\tr\n", "itself or a later one"),
            ("4\t0/1000000\tr\n", "itself or a later one"),
            (
                "1\t0/1000000\tr\n2\t0/2000000\tr\n1\t0/3000000\tr\n",
                "a loop",
            ),
            ("2\t0/1000000\tr\n2\t0/2000000\tr\n", "a loop"),
            (
                "1\t0/3000000\tr\n2\t0/2000000\tr\n",
                "before the previous one",
            ),
        ] {
            let e = TimelinePath::parse(tli(3), text, "00000003.history").unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt);
            let e = e.to_string();
            assert!(
                e.contains("00000003.history, line") && e.contains(why),
                "{e}"
            );
        }
    }
}
