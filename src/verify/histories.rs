//! The objects directly under `wals/`: timeline history files (read when
//! new or changed since the checkpoint, else taken from it), and anything
//! else, which Barman's layout does not put there.

use std::collections::{BTreeMap, BTreeSet};

use super::checkpoint::HistorySeen;
use super::history_check::HistoryFile;
use super::report::{ObjectFault, ObjectProblem, ReadCounts};
use crate::error::{Error, Result};
use crate::layout::WalKey;
use crate::repo::{OpenedObject, Repo};
use crate::store::ObjectInfo;
use crate::wal::history::TimelinePath;
use crate::wal::{TimelineId, WalFileName};

/// Lists `wals/` one level deep: the history files found (parsed, or why
/// not), what to remember of them, and a problem for anything else.
pub(super) async fn read_root(
    repo: &Repo,
    old_histories: &BTreeMap<String, HistorySeen>,
    problems: &mut BTreeSet<ObjectProblem>,
    read: &mut ReadCounts,
) -> Result<(
    BTreeMap<TimelineId, HistoryFile>,
    BTreeMap<String, HistorySeen>,
)> {
    let wals = repo.layout.wals_prefix();
    // Objects directly under wals/: history files, and anything misplaced
    // (checked afresh every run).
    problems.retain(|p| {
        p.key
            .get(wals.len()..)
            .is_some_and(|rest| rest.contains('/'))
    });
    let root = repo.store.list_shallow(&wals).await?;
    read.keys_listed += root.len() as u64;
    let mut histories: BTreeMap<TimelineId, HistoryFile> = BTreeMap::new();
    let mut seen_histories: BTreeMap<String, HistorySeen> = BTreeMap::new();
    for o in root {
        let t = match repo.layout.parse_wal_key(&o.key) {
            Some(WalKey {
                name: WalFileName::TimelineHistory(t),
                ..
            }) => t,
            _ => {
                problems.insert(ObjectProblem {
                    key: o.key,
                    fault: ObjectFault::NotWal,
                });
                continue;
            }
        };
        let text = match old_histories.get(&o.key) {
            Some(h) if h.size == o.size && h.last_modified == o.last_modified => Ok(h.text.clone()),
            _ => {
                read.objects_read += 1;
                read.bytes_read += o.size;
                read_history(repo, t, &o).await?
            }
        };
        if let Ok(text) = &text {
            seen_histories.insert(
                o.key.clone(),
                HistorySeen {
                    size: o.size,
                    last_modified: o.last_modified,
                    text: text.clone(),
                },
            );
        }
        let path =
            text.and_then(|text| TimelinePath::parse(t, &text, &o.key).map_err(|e| e.to_string()));
        histories.insert(t, HistoryFile { key: o.key, path });
    }
    Ok((histories, seen_histories))
}

/// Downloads and checks one history file (every run reads new or changed
/// ones): its text, or the fault that makes it unusable.
pub(super) async fn read_history(
    repo: &Repo,
    timeline: TimelineId,
    info: &ObjectInfo,
) -> Result<std::result::Result<String, String>> {
    let name = WalFileName::TimelineHistory(timeline);
    let Some(obj) = repo.store.get(&info.key).await? else {
        return Ok(Err(format!("{} vanished while being read", info.key)));
    };
    let opened = OpenedObject::of_wal(repo, &name, obj)?;
    match repo.decode(opened, Vec::new()).await {
        Ok((_, bytes)) => Ok(Ok(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e @ (Error::Corrupt(_) | Error::WrongKey(_))) => Ok(Err(e.to_string())),
        Err(e) => Err(e),
    }
}
