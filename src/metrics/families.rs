//! The one list of pitr's metrics (names, types, help, labels) and the
//! samples a snapshot gives them. `pitr metrics` and the CNPG-I sidecar
//! both expose exactly these; docs/monitoring.md lists them.
//!
//! Timestamps are Unix seconds, 0 when there is none (as plugin-barman-cloud
//! does), so `time() - x > threshold` alerts when something never
//! happened. Values that mean nothing without their subject (the age or
//! size of a backup that does not exist, the result of a drill that never
//! ran, the `.ready` backlog without a PGDATA) are left out.

use chrono::{DateTime, Utc};

use super::gather::Snapshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// One metric family. Counter names end in `_total`.
#[derive(Debug)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

/// One value, with label values in the order of its family's labels.
#[derive(Debug, Clone)]
pub struct Sample {
    pub def: &'static Def,
    pub labels: Vec<String>,
    pub value: f64,
}

const S: &[&str] = &["server"];
const ST: &[&str] = &["server", "timeline"];

macro_rules! defs {
    ($($id:ident = $name:literal, $kind:ident, $labels:ident, $help:literal;)*) => {
        $(pub static $id: Def = Def { name: $name, kind: Kind::$kind, help: $help, labels: $labels };)*
        /// Every family, in exposition order.
        pub static DEFS: &[&Def] = &[$(&$id),*];
    };
}

defs! {
    LAST_ARCHIVED_WAL = "pitr_last_archived_wal_timestamp_seconds", Gauge, ST,
        "When the store received the newest archived WAL segment (timeline: its timeline); 0 when the archive is empty";
    LAST_ARCHIVED_WAL_AGE = "pitr_last_archived_wal_age_seconds", Gauge, S,
        "Seconds since the store received the newest archived WAL segment";
    ARCHIVED_SEGMENTS = "pitr_archived_segments_total", Counter, S,
        "WAL files archived: archive calls answered OK (as pg_stat_archiver.archived_count)";
    ARCHIVED_BYTES = "pitr_archived_bytes_total", Counter, S,
        "Bytes of the WAL files archived, before compression";
    ARCHIVE_FAILURES = "pitr_archive_failures_total", Counter, S,
        "Archive calls that failed (as pg_stat_archiver.failed_count)";
    LAST_ARCHIVE_SUCCESS = "pitr_last_archive_success_timestamp_seconds", Gauge, S,
        "When an archive call last succeeded; 0 when never";
    LAST_ARCHIVE_FAILURE = "pitr_last_archive_failure_timestamp_seconds", Gauge, S,
        "When an archive call last failed; 0 when never";
    READY_FILES = "pitr_archive_ready_files", Gauge, S,
        "WAL files PostgreSQL marked ready that are not archived yet (pg_wal/archive_status/*.ready; needs the PGDATA)";
    LAST_WAL_WRITE = "pitr_wal_last_write_timestamp_seconds", Gauge, S,
        "When PostgreSQL last wrote a WAL segment in pg_wal (the newest modification time; needs the PGDATA)";
    LAST_BACKUP = "pitr_last_available_backup_timestamp_seconds", Gauge, S,
        "When the newest usable (DONE) backup ended; 0 when none";
    LAST_BACKUP_AGE = "pitr_last_available_backup_age_seconds", Gauge, S,
        "Seconds since the newest usable backup ended";
    LAST_BACKUP_SIZE = "pitr_last_available_backup_size_bytes", Gauge, S,
        "Bytes stored for the newest usable backup";
    LAST_BACKUP_DURATION = "pitr_last_available_backup_duration_seconds", Gauge, S,
        "Seconds the newest usable backup took";
    LAST_FAILED_BACKUP = "pitr_last_failed_backup_timestamp_seconds", Gauge, S,
        "When the newest FAILED backup ended (in the catalog, or one that failed before it had a backup.info); 0 when none";
    USABLE_BACKUPS = "pitr_usable_backups", Gauge, S,
        "Backups a restore can use";
    BACKUPS = "pitr_backups", Gauge, S,
        "Backups in the catalog, whatever their status";
    FIRST_RECOVERABILITY_POINT = "pitr_first_recoverability_point_timestamp_seconds", Gauge, S,
        "The earliest point a restore can reach (the end of the oldest usable backup); 0 when no backup is usable";
    LAST_RECOVERABILITY_POINT = "pitr_last_recoverability_point_timestamp_seconds", Gauge, ST,
        "The latest point a restore can reach (when the newest archived segment was stored, timeline: its timeline); 0 when no backup is usable";
    VERIFY_GAPS = "pitr_archive_verify_gaps", Gauge, S,
        "Gaps in the WAL archive found by the last archive verify";
    LAST_VERIFY = "pitr_last_archive_verify_timestamp_seconds", Gauge, S,
        "When the last archive verify ended; 0 when never";
    OBSOLETE_BACKUPS = "pitr_retention_obsolete_backups", Gauge, S,
        "Backups the retention policy made obsolete at its last run";
    LAST_EXPIRE = "pitr_last_expire_timestamp_seconds", Gauge, S,
        "When retention last ran; 0 when never";
    DRILL_SUCCESS = "pitr_last_drill_success", Gauge, S,
        "1 when every check of the last restore drill passed, 0 when one failed";
    LAST_DRILL = "pitr_last_drill_timestamp_seconds", Gauge, S,
        "When the last restore drill ended; 0 when never";
    DRILL_RTO = "pitr_last_drill_rto_seconds", Gauge, S,
        "Seconds the last restore drill took to a usable server (its RTO)";
    STORE_UP = "pitr_store_up", Gauge, S,
        "1 when the store answered the last refresh, 0 when it could not be reached";
    STORE_LATENCY = "pitr_store_request_duration_seconds", Gauge, S,
        "Seconds one small request (a state record's GET) took at the last refresh";
    STATUS_AGE = "pitr_status_age_seconds", Gauge, S,
        "Seconds since the values read from the store were read";
    REFRESH_FAILURES = "pitr_status_refresh_failures_total", Counter, S,
        "Refreshes that could not read the store (the last values read stay)";
}

/// Whole Unix seconds, as plugin-barman-cloud's gauges and CloudNativePG's
/// backup times.
fn ts(t: Option<DateTime<Utc>>) -> f64 {
    t.map_or(0.0, |t| t.timestamp() as f64)
}

fn age(now: DateTime<Utc>, t: DateTime<Utc>) -> f64 {
    ((now - t).num_milliseconds() as f64 / 1000.0).max(0.0)
}

/// The samples of `snap` at `now` (ages are computed against it).
pub fn samples(snap: &Snapshot, now: DateTime<Utc>) -> Vec<Sample> {
    let server = snap.server.clone();
    let mut out = Vec::new();
    let mut put = |def: &'static Def, value: f64, extra: Option<String>| {
        let mut labels = vec![server.clone()];
        labels.extend(extra);
        out.push(Sample { def, labels, value });
    };
    if let Some(store) = &snap.store {
        let st = &store.status;
        let tip = st.last_archived.as_ref();
        let timeline = tip
            .map(|t| t.segment.timeline.get().to_string())
            .unwrap_or_default();
        let tip_at = tip.and_then(|t| t.archived_at);
        put(&LAST_ARCHIVED_WAL, ts(tip_at), Some(timeline.clone()));
        if let Some(t) = tip_at {
            put(&LAST_ARCHIVED_WAL_AGE, age(now, t), None);
        }
        let last = st.last_backup.as_ref();
        let last_end = last.and_then(|b| b.end_time).map(|t| t.with_timezone(&Utc));
        put(&LAST_BACKUP, ts(last_end), None);
        if let Some(b) = last {
            if let Some(end) = last_end {
                put(&LAST_BACKUP_AGE, age(now, end), None);
            }
            if let Some(size) = b.size {
                put(&LAST_BACKUP_SIZE, size as f64, None);
            }
            if let Some(d) = b.duration_seconds() {
                put(&LAST_BACKUP_DURATION, d, None);
            }
        }
        let failed_in_catalog = st
            .last_failed_backup
            .as_ref()
            .and_then(|b| b.end_time.or(b.begin_time))
            .map(|t| t.with_timezone(&Utc));
        let failed_recorded = store
            .backup
            .as_ref()
            .and_then(|b| b.last_failed.as_ref())
            .map(|f| f.end_time);
        put(
            &LAST_FAILED_BACKUP,
            ts(failed_in_catalog.max(failed_recorded)),
            None,
        );
        put(&USABLE_BACKUPS, st.usable_backups as f64, None);
        put(&BACKUPS, st.backups as f64, None);
        let first = st.first_recoverability_point.map(|t| t.with_timezone(&Utc));
        put(&FIRST_RECOVERABILITY_POINT, ts(first), None);
        // The archive's end is reachable only from a usable backup, and
        // never before that backup's end.
        let last_point = first.and(tip_at.max(last_end));
        put(&LAST_RECOVERABILITY_POINT, ts(last_point), Some(timeline));
        let verify = store.verify.as_ref();
        if let Some(gaps) = verify.and_then(|v| v.gaps) {
            put(&VERIFY_GAPS, gaps as f64, None);
        }
        put(&LAST_VERIFY, ts(verify.and_then(|v| v.finished_at)), None);
        let expire = store.expire.as_ref();
        if let Some(n) = expire.and_then(|x| x.obsolete_backups) {
            put(&OBSOLETE_BACKUPS, n as f64, None);
        }
        put(&LAST_EXPIRE, ts(expire.and_then(|x| x.finished_at)), None);
        let drill = store.drill.as_ref();
        if let Some(p) = drill.and_then(|d| d.passed) {
            put(&DRILL_SUCCESS, f64::from(u8::from(p)), None);
        }
        put(&LAST_DRILL, ts(drill.and_then(|d| d.finished_at)), None);
        if let Some(rto) = drill.and_then(|d| d.rto_seconds) {
            put(&DRILL_RTO, rto, None);
        }
        put(&STATUS_AGE, age(now, store.read_at), None);
    }
    if let Some(a) = snap.archive() {
        put(&ARCHIVED_SEGMENTS, a.archived_count as f64, None);
        put(&ARCHIVED_BYTES, a.archived_bytes as f64, None);
        put(&ARCHIVE_FAILURES, a.failed_count as f64, None);
        put(&LAST_ARCHIVE_SUCCESS, ts(a.last_archived_time), None);
        put(&LAST_ARCHIVE_FAILURE, ts(a.last_failed_time), None);
    }
    if let Some(local) = &snap.local {
        put(&READY_FILES, local.ready_files as f64, None);
        put(&LAST_WAL_WRITE, ts(local.last_wal_write), None);
    }
    put(&STORE_UP, f64::from(u8::from(snap.store_up)), None);
    if let Some(l) = snap.store_latency_seconds {
        put(&STORE_LATENCY, l, None);
    }
    put(&REFRESH_FAILURES, snap.refresh_failures as f64, None);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for d in DEFS {
            assert!(d.name.starts_with("pitr_"), "{}", d.name);
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "{}",
                d.name
            );
            assert_eq!(d.labels[0], "server");
            assert!(!d.help.is_empty());
        }
    }
}
