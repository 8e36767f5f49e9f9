//! Reading WAL records out of a segment's bytes: enough to see when each
//! transaction ended (commit and abort records carry their time), where
//! restore points are, and which transaction a record belongs to. This is
//! how the restore planner maps a time, a restore point name or an xid to
//! the segment that holds it, exactly.
//!
//! Layout (PostgreSQL 10 and newer): pages of `xlp_xlog_blcksz` bytes, each
//! with a header (40 bytes on a segment's first page, 24 on the others);
//! records are 8-byte aligned, begin with a 24-byte `XLogRecord` header
//! (`xl_tot_len`, `xl_xid`, `xl_prev`, `xl_info`, `xl_rmid`, `xl_crc`), and
//! may continue on the next page (flagged `XLP_FIRST_IS_CONTRECORD`, with
//! `xlp_rem_len` bytes of the record first). A record's main data is its
//! last bytes; its length is in the `XLR_BLOCK_ID_DATA_SHORT/LONG` header.

use chrono::{DateTime, Utc};

use super::page_header::{LongPageHeader, LONG_HEADER_LEN as LONG_HEADER, XLP_LONG_HEADER};
use super::Lsn;
use crate::error::Error;

const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const SHORT_HEADER: usize = 24;
const RECORD_HEADER: usize = 24;
const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalEvent {
    /// A transaction committed or aborted at `time`.
    TxEnd {
        lsn: Lsn,
        xid: u32,
        time: DateTime<Utc>,
        committed: bool,
    },
    /// `pg_create_restore_point(name)`.
    RestorePoint {
        lsn: Lsn,
        name: String,
        time: DateTime<Utc>,
    },
}

impl WalEvent {
    pub fn lsn(&self) -> Lsn {
        match self {
            WalEvent::TxEnd { lsn, .. } | WalEvent::RestorePoint { lsn, .. } => *lsn,
        }
    }
}

fn pg_time(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us.saturating_add(PG_EPOCH_US)).unwrap_or_default()
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// The record's main data, if it has any and no block references.
fn main_data(rec: &[u8]) -> Option<&[u8]> {
    let mut i = RECORD_HEADER;
    while i < rec.len() {
        let id = rec[i];
        i += 1;
        let len = match id {
            255 => *rec.get(i)? as usize,
            254 => u32_at(rec.get(i..i + 4)?, 0) as usize,
            253 => {
                i += 2; // replication origin
                continue;
            }
            252 => {
                i += 4; // top-level xid
                continue;
            }
            _ => return None, // block references: not a record we read
        };
        return rec.len().checked_sub(len).map(|start| &rec[start..]);
    }
    None
}

fn event(rec: &[u8], lsn: Lsn) -> Option<WalEvent> {
    let xid = u32_at(rec, 4);
    let info = rec[16];
    let rmid = rec[17];
    match rmid {
        RM_XACT_ID => {
            let op = info & XLOG_XACT_OPMASK;
            if op != XLOG_XACT_COMMIT && op != XLOG_XACT_ABORT {
                return None; // prepared transactions end under another xid
            }
            let main = main_data(rec)?;
            let time = pg_time(i64::from_le_bytes(main.get(0..8)?.try_into().ok()?));
            Some(WalEvent::TxEnd {
                lsn,
                xid,
                time,
                committed: op == XLOG_XACT_COMMIT,
            })
        }
        RM_XLOG_ID if info & 0xF0 == XLOG_RESTORE_POINT => {
            let main = main_data(rec)?;
            let time = pg_time(i64::from_le_bytes(main.get(0..8)?.try_into().ok()?));
            let raw = main.get(8..).unwrap_or_default();
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            let name = String::from_utf8_lossy(&raw[..end]).into_owned();
            Some(WalEvent::RestorePoint { lsn, name, time })
        }
        _ => None,
    }
}

/// Reads consecutive segments of one timeline, carrying a record that
/// continues from one segment into the next.
#[derive(Default)]
pub struct WalScanner {
    /// A record begun in the previous segment: its LSN, bytes so far, total length.
    pending: Option<(Lsn, Vec<u8>, usize)>,
    /// The LSN where the previous segment ended (to know the next follows it).
    next_lsn: Option<u64>,
}

impl WalScanner {
    /// Scans one whole segment; `what` names it in errors. Stops at the end
    /// of valid WAL (zeros, or a page left over from a recycled segment).
    pub fn scan(&mut self, seg: &[u8], what: &str) -> Result<Vec<WalEvent>, Error> {
        let first = LongPageHeader::parse(seg, what)?;
        let blcksz = first.block_size as usize;
        if !(1024..=65536).contains(&blcksz) || !blcksz.is_power_of_two() {
            return Err(Error::Corrupt(format!(
                "{what}: impossible WAL block size {blcksz}"
            )));
        }
        let seg_start = first.page_address;
        if self.next_lsn != Some(seg_start) {
            self.pending = None;
        }
        self.next_lsn = Some(seg_start + seg.len() as u64);
        let mut events = Vec::new();
        for (p, page) in seg.chunks(blcksz).enumerate() {
            if page.len() < SHORT_HEADER {
                break;
            }
            let page_addr = seg_start + (p * blcksz) as u64;
            let info = u16_at(page, 2);
            if u64_at(page, 8) != page_addr {
                self.pending = None;
                return Ok(events); // end of valid WAL
            }
            let mut off = if info & XLP_LONG_HEADER != 0 {
                LONG_HEADER
            } else {
                SHORT_HEADER
            };
            if info & XLP_FIRST_IS_CONTRECORD != 0 {
                let rem = u32_at(page, 16) as usize;
                let here = rem.min(page.len() - off);
                if let Some((lsn, mut buf, total)) = self.pending.take() {
                    buf.extend_from_slice(&page[off..off + here]);
                    if buf.len() >= total {
                        events.extend(event(&buf[..total], lsn));
                    } else {
                        self.pending = Some((lsn, buf, total));
                    }
                }
                if rem > here {
                    continue; // the whole page continues the record
                }
                off = (off + rem).next_multiple_of(8);
            } else {
                self.pending = None;
            }
            while off + 4 <= page.len() {
                let total = u32_at(page, off) as usize;
                if total == 0 {
                    return Ok(events); // end of WAL: the rest is zeros
                }
                if total < RECORD_HEADER {
                    return Ok(events); // not a record: stop reading
                }
                let lsn = Lsn(page_addr + off as u64);
                if off + total <= page.len() {
                    events.extend(event(&page[off..off + total], lsn));
                    off = (off + total).next_multiple_of(8);
                } else {
                    self.pending = Some((lsn, page[off..].to_vec(), total));
                    break;
                }
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLCK: usize = 8192;

    /// A segment of `pages` pages at `start` holding `records`, laid out as
    /// PostgreSQL does (records continue across pages).
    fn segment(start: u64, pages: usize, records: &[Vec<u8>]) -> Vec<u8> {
        let mut stream = Vec::new();
        for r in records {
            stream.extend_from_slice(r);
            stream.resize(stream.len().next_multiple_of(8), 0);
        }
        let mut seg = vec![0u8; pages * BLCK];
        let mut taken = 0;
        let mut rem_for_page = 0usize;
        // Track record boundaries to set xlp_rem_len.
        let mut bounds = Vec::new();
        let mut at = 0;
        for r in records {
            bounds.push((at, r.len()));
            at = (at + r.len()).next_multiple_of(8);
        }
        for p in 0..pages {
            let page = &mut seg[p * BLCK..(p + 1) * BLCK];
            let long = p == 0;
            let hdr = if long { LONG_HEADER } else { SHORT_HEADER };
            page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
            let mut info = if long { XLP_LONG_HEADER } else { 0 };
            // Is `taken` inside a record?
            if let Some((s, l)) = bounds.iter().find(|(s, l)| *s < taken && taken < s + l) {
                info |= XLP_FIRST_IS_CONTRECORD;
                rem_for_page = s + l - taken;
            }
            page[2..4].copy_from_slice(&info.to_le_bytes());
            page[4..8].copy_from_slice(&1u32.to_le_bytes());
            page[8..16].copy_from_slice(&(start + (p * BLCK) as u64).to_le_bytes());
            page[16..20].copy_from_slice(
                &(if info & XLP_FIRST_IS_CONTRECORD != 0 {
                    rem_for_page as u32
                } else {
                    0
                })
                .to_le_bytes(),
            );
            if long {
                page[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
                page[36..40].copy_from_slice(&(BLCK as u32).to_le_bytes());
            }
            let room = BLCK - hdr;
            let n = room.min(stream.len().saturating_sub(taken));
            page[hdr..hdr + n].copy_from_slice(&stream[taken..taken + n]);
            taken += n;
        }
        seg
    }

    fn record(rmid: u8, info: u8, xid: u32, main: &[u8], filler: usize) -> Vec<u8> {
        let mut r = vec![0u8; RECORD_HEADER];
        r.extend(std::iter::repeat_n(253u8, 0)); // no origin
        let body_start = r.len();
        if main.len() < 256 {
            r.push(255);
            r.push(main.len() as u8);
        } else {
            r.push(254);
            r.extend_from_slice(&(main.len() as u32).to_le_bytes());
        }
        let _ = body_start;
        r.extend(std::iter::repeat_n(0u8, filler));
        r.extend_from_slice(main);
        let total = r.len() as u32;
        r[0..4].copy_from_slice(&total.to_le_bytes());
        r[4..8].copy_from_slice(&xid.to_le_bytes());
        r[16] = info;
        r[17] = rmid;
        r
    }

    fn commit(xid: u32, us: i64) -> Vec<u8> {
        record(RM_XACT_ID, XLOG_XACT_COMMIT, xid, &us.to_le_bytes(), 0)
    }

    #[test]
    fn finds_commits_and_restore_points_across_pages_and_segments() {
        let mut rp = 5_000_000i64.to_le_bytes().to_vec();
        let mut name = b"before-upgrade".to_vec();
        name.resize(64, 0);
        rp.extend_from_slice(&name);
        let filler = record(RM_XLOG_ID, 0x10, 0, &[0u8; 300], 9000); // spans pages
        let records = vec![
            commit(700, 1_000_000),
            filler.clone(),
            commit(701, 2_000_000),
            record(RM_XLOG_ID, XLOG_RESTORE_POINT, 0, &rp, 0),
            record(
                RM_XACT_ID,
                XLOG_XACT_ABORT,
                702,
                &3_000_000i64.to_le_bytes(),
                0,
            ),
        ];
        let seg = segment(0x300_0000, 4, &records);
        let mut s = WalScanner::default();
        let ev = s.scan(&seg, "seg").unwrap();
        assert_eq!(ev.len(), 4, "{ev:?}");
        match &ev[1] {
            WalEvent::TxEnd {
                xid,
                time,
                committed,
                ..
            } => {
                assert_eq!(*xid, 701);
                assert!(committed);
                assert_eq!(time.to_rfc3339(), "2000-01-01T00:00:02+00:00");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&ev[2], WalEvent::RestorePoint { name, .. } if name == "before-upgrade"));
        assert!(matches!(
            &ev[3],
            WalEvent::TxEnd {
                xid: 702,
                committed: false,
                ..
            }
        ));
        assert_eq!(ev[0].lsn(), Lsn(0x300_0000 + LONG_HEADER as u64));
    }

    #[test]
    fn stops_at_recycled_pages() {
        let seg = segment(0x300_0000, 2, &[commit(1, 1)]);
        let mut other = segment(0x100_0000, 2, &[commit(2, 2)]);
        other[..BLCK].copy_from_slice(&seg[..BLCK]); // page 2 is stale
        let ev = WalScanner::default().scan(&other, "seg").unwrap();
        assert_eq!(ev.len(), 1);
    }
}
