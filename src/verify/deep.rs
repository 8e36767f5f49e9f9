//! `--deep`: every WAL object downloaded and decoded (checksum, gzip CRC,
//! GCM tags, pitr's recorded size), and each segment's first page checked
//! (system identifier, page address, decoded size). A few objects travel at
//! once; the walk goes one hash directory at a time, so at most one
//! directory's keys are held.

use std::collections::BTreeSet;
use std::io::{self, Write};

use futures::StreamExt;

use super::checkpoint::TimelineCheckpoint;
use super::report::{ObjectFault, ObjectProblem, ReadCounts};
use super::walk::{account, dir_timeline, Classifier, Listed};
use crate::error::{Error, Result};
use crate::repo::{OpenedObject, Repo};
use crate::store::ObjectInfo;
use crate::transfer::meta;
use crate::wal::history::TimelinePath;
use crate::wal::page_header::{LongPageHeader, LONG_HEADER_LEN};
use crate::wal::{Lsn, TimelineId, WalFileName};

/// Objects downloaded at once.
pub const IN_FLIGHT: usize = 4;

/// Keeps the first bytes of what it is given (the page header, or a
/// whole history file) and counts the rest.
struct Head {
    keep: usize,
    bytes: Vec<u8>,
}

impl Write for Head {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.keep.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&buf[..room.min(buf.len())]);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Downloads and checks one object; `Ok(None)` when it is sound (or gone).
async fn check_object(
    repo: &Repo,
    name: WalFileName,
    info: ObjectInfo,
    seg_size: u64,
    system: Option<u64>,
) -> Result<(Option<ObjectFault>, u64)> {
    let Some(obj) = repo.store.get(&info.key).await? else {
        return Ok((None, 0)); // deleted since the listing: the next walk sees it
    };
    let stored = obj.info.size;
    let recorded = obj
        .info
        .metadata
        .get(meta::SIZE)
        .and_then(|s| s.parse::<u64>().ok());
    let opened = OpenedObject::of_wal(repo, &name, obj)?;
    let keep = match name {
        WalFileName::TimelineHistory(_) => 1 << 20,
        _ => LONG_HEADER_LEN,
    };
    let (report, head) = match repo
        .decode(
            opened,
            Head {
                keep,
                bytes: Vec::new(),
            },
        )
        .await
    {
        Ok(r) => r,
        Err(e @ (Error::Corrupt(_) | Error::WrongKey(_))) => {
            return Ok((
                Some(ObjectFault::Damaged {
                    error: e.to_string(),
                }),
                stored,
            ))
        }
        Err(e) => return Err(e),
    };
    let fault = match name {
        WalFileName::Segment(s) | WalFileName::Partial(s) => {
            if let (WalFileName::Segment(_), Some(r)) = (name, recorded) {
                if r != seg_size {
                    return Ok((
                        Some(ObjectFault::SizeMetadata {
                            recorded: r,
                            segment_size: seg_size,
                        }),
                        stored,
                    ));
                }
            }
            match LongPageHeader::parse(&head.bytes, &info.key) {
                Err(e) => Some(ObjectFault::Unreadable {
                    error: e.to_string(),
                }),
                Ok(h) => {
                    let expected = Lsn(s.start_lsn(seg_size));
                    if system.is_some_and(|sys| sys != h.system_identifier) {
                        Some(ObjectFault::ForeignSystem {
                            found: h.system_identifier,
                            expected: system.unwrap_or_default(),
                        })
                    } else if u64::from(h.segment_size) != seg_size {
                        Some(ObjectFault::Unreadable {
                            error: format!(
                                "its page header says segments are {} bytes, but this \
                                 archive's are {seg_size}",
                                h.segment_size
                            ),
                        })
                    } else if h.page_address != expected.0 {
                        Some(ObjectFault::Misplaced {
                            page_address: Lsn(h.page_address),
                            expected,
                        })
                    } else if report.size != seg_size {
                        Some(ObjectFault::WrongSize {
                            size: report.size,
                            segment_size: seg_size,
                        })
                    } else {
                        None
                    }
                }
            }
        }
        WalFileName::TimelineHistory(t) => {
            TimelinePath::parse(t, &String::from_utf8_lossy(&head.bytes), &info.key)
                .err()
                .map(|e| ObjectFault::Unreadable {
                    error: e.to_string(),
                })
        }
        WalFileName::BackupHistory { .. } => None,
    };
    Ok((fault, stored))
}

/// Walks `timeline`'s hash directories in `dirs` after `start_after`,
/// accounting for every key as the shallow walk does and downloading every
/// WAL object. Advances both checkpoints of the timeline.
#[allow(clippy::too_many_arguments)]
pub(super) async fn walk_timeline(
    repo: &Repo,
    cls: &Classifier,
    timeline: TimelineId,
    dirs: &[String],
    start_after: Option<&str>,
    floor: Option<u64>,
    system: Option<u64>,
    cp: &mut TimelineCheckpoint,
    problems: &mut BTreeSet<ObjectProblem>,
    read: &mut ReadCounts,
) -> Result<()> {
    for dir in dirs {
        if dir_timeline(repo, dir) != Some(timeline) {
            continue;
        }
        if start_after
            .is_some_and(|a| dir.trim_end_matches('/') < a && !a.starts_with(dir.as_str()))
        {
            continue;
        }
        let mut jobs = Vec::new();
        let mut last = None;
        for o in repo.store.list(dir).await? {
            if start_after.is_some_and(|a| o.key.as_str() <= a) {
                continue;
            }
            read.keys_listed += 1;
            last = Some(o.key.clone());
            let info = o.clone();
            match account(cls, repo, o, floor, cp, problems) {
                Listed::Segment(s, n) if floor.is_none_or(|f| n >= f) => {
                    jobs.push((WalFileName::Segment(s), info))
                }
                Listed::OtherWal(name) => jobs.push((name, info)),
                _ => {}
            }
        }
        let seg_size = cls.seg_size;
        let mut results = futures::stream::iter(jobs)
            .map(|(name, info)| async move {
                let key = info.key.clone();
                check_object(repo, name, info, seg_size, system)
                    .await
                    .map(|r| (key, r))
            })
            .buffer_unordered(IN_FLIGHT);
        while let Some(r) = results.next().await {
            let (key, (fault, bytes)) = r?;
            read.objects_read += 1;
            read.bytes_read += bytes;
            if let Some(fault) = fault {
                problems.insert(ObjectProblem { key, fault });
            }
        }
        if let Some(k) = last {
            cp.deep_last_key = Some(k);
        }
    }
    Ok(())
}
