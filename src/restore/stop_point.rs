//! Where recovery stops: the WAL records (commit and abort times, restore
//! points, xids) read from the archive, segment by segment, each once.

use std::collections::HashMap;

use super::target::Target;
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::wal::records::{WalEvent, WalScanner};
use crate::wal::{locate, Lsn, SegmentName, WalFileName};

/// WAL events per segment, read on demand, each segment once.
pub(super) struct Events<'a> {
    repo: &'a Repo,
    scanner: WalScanner,
    pub(super) cache: HashMap<SegmentName, Vec<WalEvent>>,
}

impl<'a> Events<'a> {
    pub(super) fn new(repo: &'a Repo) -> Self {
        Events {
            repo,
            scanner: WalScanner::default(),
            cache: HashMap::new(),
        }
    }

    pub(super) async fn of(&mut self, name: &SegmentName) -> Result<&[WalEvent]> {
        if !self.cache.contains_key(name) {
            let file = WalFileName::Segment(*name);
            let obj = locate::open(self.repo, &file)
                .await?
                .ok_or_else(|| Error::NotFound(format!("{name} vanished from the archive")))?;
            let (_, bytes) = self.repo.decode(obj, Vec::new()).await?;
            let events = self.scanner.scan(&bytes, &name.to_string())?;
            self.cache.insert(*name, events);
        }
        Ok(&self.cache[name])
    }
}

/// The event that ends recovery for `target`, among `events`.
pub(super) fn stop_event<'e>(
    target: &Target,
    exclusive: bool,
    events: &'e [WalEvent],
    after: Lsn,
) -> Option<&'e WalEvent> {
    events
        .iter()
        .filter(|e| e.lsn() >= after)
        .find(|e| match (target, e) {
            (Target::Time { time, .. }, WalEvent::TxEnd { time: t, .. }) => {
                if exclusive {
                    *t >= *time
                } else {
                    *t > *time
                }
            }
            (Target::Xid { xid }, WalEvent::TxEnd { xid: x, .. }) => {
                u64::from(*x) == *xid & 0xFFFF_FFFF
            }
            (Target::Name { name }, WalEvent::RestorePoint { name: n, .. }) => n == name,
            _ => false,
        })
}

pub(super) fn describe_stop(target: &Target, e: &WalEvent, segment: &SegmentName) -> String {
    match e {
        WalEvent::TxEnd { xid, time, committed, lsn } => format!(
            "recovery stops at transaction {xid}, which {} at {} (LSN {lsn}, segment {segment}){}",
            if *committed { "committed" } else { "aborted" },
            time.to_rfc3339(),
            match target {
                Target::Time { .. } => ": the first to end after the target, read from the WAL",
                _ => "",
            }
        ),
        WalEvent::RestorePoint { name, time, lsn } => format!(
            "recovery stops at restore point '{name}', created at {} (LSN {lsn}, segment {segment})",
            time.to_rfc3339()
        ),
    }
}
