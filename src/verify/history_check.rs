//! Timeline history files against each other and against the segments:
//! every timeline after 1 that has WAL (or is another's parent) needs its
//! history file; a timeline's history must repeat its parent's; and a
//! timeline has no segment from before it forked.

use std::collections::BTreeMap;

use super::ranges::Ranges;
use super::report::HistoryProblem;
use crate::wal::history::TimelinePath;
use crate::wal::{SegmentName, TimelineId};

/// A history file as found: its key, and its parsed path or why not.
pub(super) struct HistoryFile {
    pub key: String,
    pub path: Result<TimelinePath, String>,
}

/// Every problem among `histories` and the timelines in `segments`.
pub(super) fn check(
    histories: &BTreeMap<TimelineId, HistoryFile>,
    segments: &BTreeMap<TimelineId, Ranges>,
    seg_size: u64,
) -> Vec<HistoryProblem> {
    let mut out = Vec::new();
    let mut needed: BTreeMap<TimelineId, String> = BTreeMap::new();
    for (t, r) in segments {
        if t.get() > 1 && !r.is_empty() {
            needed
                .entry(*t)
                .or_insert_with(|| format!("timeline {} has archived segments", t.get()));
        }
    }
    for (t, h) in histories {
        match &h.path {
            Err(error) => out.push(HistoryProblem::Unreadable {
                timeline: *t,
                key: h.key.clone(),
                error: error.clone(),
            }),
            Ok(path) => {
                for span in &path.spans[..path.spans.len() - 1] {
                    if span.timeline.get() > 1 {
                        needed
                            .entry(span.timeline)
                            .or_insert_with(|| format!("{t}.history names it as an ancestor"));
                    }
                }
            }
        }
    }
    for (t, why) in needed {
        if !histories.contains_key(&t) {
            out.push(HistoryProblem::Missing {
                timeline: t,
                needed_by: why,
            });
        }
    }

    for (t, h) in histories {
        let Ok(path) = &h.path else { continue };
        let own = path.spans.last().expect("a path has its own timeline");
        // The parent's own history must be the first lines of this one.
        if path.spans.len() >= 2 {
            let parent = path.spans[path.spans.len() - 2].timeline;
            if let Some(Ok(pp)) = histories.get(&parent).map(|h| &h.path) {
                let inherited = &path.spans[..path.spans.len() - 2];
                let theirs = &pp.spans[..pp.spans.len() - 1];
                let parent_begin = path.spans[path.spans.len() - 2].begin;
                let parent_own_begin = pp.spans.last().map(|s| s.begin);
                if inherited != theirs || Some(parent_begin) != parent_own_begin {
                    out.push(HistoryProblem::Contradicts {
                        timeline: *t,
                        parent,
                        detail: format!(
                            "{t}.history says timeline {} began at {parent_begin} after {}, \
                             but {parent}.history says it began at {} after {}",
                            parent.get(),
                            describe(inherited),
                            parent_own_begin.unwrap_or_default(),
                            describe(theirs)
                        ),
                    });
                }
            }
        }
        // No segment of this timeline before the one holding its fork.
        if own.begin.0 > 0 {
            let fork_seg = own.begin.segment_number(seg_size);
            if let Some(first) = segments.get(t).and_then(Ranges::first) {
                if first < fork_seg {
                    out.push(HistoryProblem::SegmentsBeforeFork {
                        timeline: *t,
                        first: SegmentName::from_number(*t, first, seg_size),
                        fork: own.begin,
                    });
                }
            }
        }
    }
    out
}

fn describe(spans: &[crate::wal::history::TimelineSpan]) -> String {
    if spans.is_empty() {
        return "no earlier timeline".into();
    }
    spans
        .iter()
        .map(|s| {
            format!(
                "timeline {} to {}",
                s.timeline.get(),
                s.end.unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn tli(n: u32) -> TimelineId {
        TimelineId::new(n).unwrap()
    }

    fn hist(t: u32, text: &str) -> (TimelineId, HistoryFile) {
        (
            tli(t),
            HistoryFile {
                key: format!("{}.history", tli(t)),
                path: TimelinePath::parse(tli(t), text, "h").map_err(|e| e.to_string()),
            },
        )
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
    fn consistent_histories_are_clean() {
        let h: BTreeMap<_, _> = [
            hist(2, "1\t0/3000100\tno recovery target specified\n"),
            hist(3, "1\t0/3000100\tx\n2\t0/5000000\ty\n"),
        ]
        .into_iter()
        .collect();
        let s = segs(&[(1, &[1, 2, 3]), (2, &[3, 4]), (3, &[5, 6])]);
        assert_eq!(check(&h, &s, SEG), []);
    }

    #[test]
    fn missing_contradicting_and_early_segments_are_named() {
        // Timeline 3 descends from 2 at 0/5000000, but 2 has no history
        // file; timeline 4 has segments and no history at all.
        let h: BTreeMap<_, _> = [hist(3, "1\t0/3000100\tx\n2\t0/5000000\ty\n")]
            .into_iter()
            .collect();
        let s = segs(&[(1, &[1, 2]), (3, &[5]), (4, &[9])]);
        let p = check(&h, &s, SEG);
        let text: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        assert_eq!(p.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with("00000002.history is missing"),
            "{text:?}"
        );
        assert!(text[0].contains("ancestor"), "{text:?}");
        assert!(
            text[1].starts_with("00000004.history is missing"),
            "{text:?}"
        );

        // 3's history says 2 forked off 1 at 3000100, 2's says 4000000.
        let h: BTreeMap<_, _> = [
            hist(2, "1\t0/4000000\tx\n"),
            hist(3, "1\t0/3000100\tx\n2\t0/5000000\ty\n"),
        ]
        .into_iter()
        .collect();
        let p = check(&h, &segs(&[(2, &[4]), (3, &[5])]), SEG);
        assert!(
            matches!(&p[..], [HistoryProblem::Contradicts { timeline, parent, .. }]
                if timeline.get() == 3 && parent.get() == 2),
            "{p:?}"
        );

        // Timeline 2 forked at segment 3 but has segment 2; a history file
        // that does not parse.
        let h: BTreeMap<_, _> = [hist(2, "1\t0/3000100\tx\n"), hist(5, "garbage\n")]
            .into_iter()
            .collect();
        let p = check(&h, &segs(&[(2, &[2, 3])]), SEG);
        assert!(
            p.iter().any(
                |p| matches!(p, HistoryProblem::SegmentsBeforeFork { first, .. }
                if first.to_string() == "000000020000000000000002")
            ),
            "{p:?}"
        );
        assert!(
            p.iter().any(
                |p| matches!(p, HistoryProblem::Unreadable { timeline, .. } if timeline.get() == 5)
            ),
            "{p:?}"
        );
    }
}
