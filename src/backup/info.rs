//! backup.info, in Barman's format: `key=value` lines sorted by key, values
//! as Barman writes them (plain text, `None`, or Python literals). pitr
//! writes only fields every Barman 3.x knows (an unknown field makes Barman
//! refuse the file) and keeps unknown fields it reads.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

use super::id::BackupId;
use super::pyrepr::{self, PyValue};
use crate::error::Error;
use crate::wal::{Lsn, SegmentName, WalFileName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupStatus {
    Started,
    Done,
    Failed,
    WaitingForWals,
    Other(String),
}

impl BackupStatus {
    pub fn as_str(&self) -> &str {
        match self {
            BackupStatus::Started => "STARTED",
            BackupStatus::Done => "DONE",
            BackupStatus::Failed => "FAILED",
            BackupStatus::WaitingForWals => "WAITING_FOR_WALS",
            BackupStatus::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "STARTED" => BackupStatus::Started,
            "DONE" => BackupStatus::Done,
            "FAILED" => BackupStatus::Failed,
            "WAITING_FOR_WALS" => BackupStatus::WaitingForWals,
            other => BackupStatus::Other(other.to_string()),
        }
    }
}

impl Serialize for BackupStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for BackupStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tablespace {
    pub name: String,
    pub oid: u32,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupInfo {
    pub backup_id: BackupId,
    pub backup_name: Option<String>,
    pub status: BackupStatus,
    pub error: Option<String>,
    pub server_name: String,
    pub systemid: Option<String>,
    pub version: Option<u32>,
    pub timeline: Option<u32>,
    pub pgdata: Option<String>,
    pub config_file: Option<String>,
    pub hba_file: Option<String>,
    pub ident_file: Option<String>,
    pub begin_time: Option<DateTime<FixedOffset>>,
    pub end_time: Option<DateTime<FixedOffset>>,
    pub begin_xlog: Option<Lsn>,
    pub end_xlog: Option<Lsn>,
    pub begin_wal: Option<SegmentName>,
    pub end_wal: Option<SegmentName>,
    pub begin_offset: Option<u64>,
    pub end_offset: Option<u64>,
    /// Bytes stored (after compression), as Barman's `size`.
    pub size: Option<u64>,
    pub xlog_segment_size: Option<u64>,
    pub tablespaces: Vec<Tablespace>,
    pub backup_label: Option<String>,
    pub total_time: Option<f64>,
    /// Fields pitr does not interpret, kept verbatim.
    #[serde(skip)]
    pub extra: BTreeMap<String, String>,
}

const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f%:z";

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "None".into())
}

impl BackupInfo {
    pub fn new(backup_id: BackupId, server_name: &str) -> Self {
        BackupInfo {
            backup_id,
            backup_name: None,
            status: BackupStatus::Started,
            error: None,
            server_name: server_name.to_string(),
            systemid: None,
            version: None,
            timeline: None,
            pgdata: None,
            config_file: None,
            hba_file: None,
            ident_file: None,
            begin_time: None,
            end_time: None,
            begin_xlog: None,
            end_xlog: None,
            begin_wal: None,
            end_wal: None,
            begin_offset: None,
            end_offset: None,
            size: None,
            xlog_segment_size: None,
            tablespaces: Vec::new(),
            backup_label: None,
            total_time: None,
            extra: BTreeMap::new(),
        }
    }

    /// The file's text, as Barman would write it.
    pub fn to_barman_text(&self) -> String {
        let mut f: BTreeMap<&str, String> = BTreeMap::new();
        if let Some(name) = &self.backup_name {
            f.insert("backup_name", name.clone()); // Barman hides it when unset
        }
        f.insert(
            "backup_label",
            self.backup_label
                .as_deref()
                .map(pyrepr::repr_str)
                .unwrap_or("None".into()),
        );
        f.insert("begin_offset", opt(&self.begin_offset));
        f.insert(
            "begin_time",
            opt(&self.begin_time.map(|t| t.format(TIME_FORMAT))),
        );
        f.insert("begin_wal", opt(&self.begin_wal));
        f.insert("begin_xlog", opt(&self.begin_xlog));
        f.insert("compression", "None".into());
        f.insert("config_file", opt(&self.config_file));
        f.insert(
            "copy_stats",
            self.total_time
                .map(|t| format!("{{'total_time': {t:.6}}}"))
                .unwrap_or("None".into()),
        );
        f.insert("deduplicated_size", "None".into());
        f.insert("end_offset", opt(&self.end_offset));
        f.insert(
            "end_time",
            opt(&self.end_time.map(|t| t.format(TIME_FORMAT))),
        );
        f.insert("end_wal", opt(&self.end_wal));
        f.insert("end_xlog", opt(&self.end_xlog));
        // One line: Barman reads line by line.
        f.insert(
            "error",
            opt(&self.error.as_ref().map(|e| e.replace(['\n', '\r'], " "))),
        );
        f.insert("hba_file", opt(&self.hba_file));
        f.insert("ident_file", opt(&self.ident_file));
        f.insert("included_files", "None".into());
        f.insert("mode", "None".into());
        f.insert("pgdata", opt(&self.pgdata));
        f.insert("server_name", self.server_name.clone());
        f.insert("size", opt(&self.size));
        f.insert("status", self.status.to_string());
        f.insert("systemid", opt(&self.systemid));
        f.insert(
            "tablespaces",
            if self.tablespaces.is_empty() {
                "None".into()
            } else {
                let items: Vec<String> = self
                    .tablespaces
                    .iter()
                    .map(|t| {
                        format!(
                            "({}, {}, {})",
                            pyrepr::repr_str(&t.name),
                            t.oid,
                            pyrepr::repr_str(&t.location)
                        )
                    })
                    .collect();
                format!("[{}]", items.join(", "))
            },
        );
        f.insert("timeline", opt(&self.timeline));
        f.insert("version", opt(&self.version));
        f.insert("xlog_segment_size", opt(&self.xlog_segment_size));
        let mut out = String::new();
        let mut all: BTreeMap<&str, &str> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for (k, v) in &self.extra {
            all.entry(k.as_str()).or_insert(v.as_str());
        }
        for (k, v) in all {
            out.push_str(k);
            out.push('=');
            out.push_str(v);
            out.push('\n');
        }
        out
    }

    /// Reads a backup.info written by Barman or pitr. `what` names it in errors.
    pub fn parse(backup_id: BackupId, text: &str, what: &str) -> Result<Self, Error> {
        let mut raw: BTreeMap<String, String> = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| Error::Corrupt(format!("{what}: line '{line}' is not key=value")))?;
            raw.insert(k.trim().to_string(), v.trim().to_string());
        }
        let mut take = |k: &str| raw.remove(k).filter(|v| v != "None");
        let bad = |k: &str, v: &str| Error::Corrupt(format!("{what}: {k}={v} cannot be read"));
        let num = |k: &str, v: Option<String>| -> Result<Option<u64>, Error> {
            v.map(|v| v.parse::<u64>().map_err(|_| bad(k, &v)))
                .transpose()
        };
        // A u32 field no smaller than `min`.
        let small = |k: &str, v: Option<String>, min: u32| -> Result<Option<u32>, Error> {
            v.map(|v| {
                v.parse::<u32>()
                    .ok()
                    .filter(|n| *n >= min)
                    .ok_or_else(|| bad(k, &v))
            })
            .transpose()
        };
        let time = |k: &str, v: Option<String>| -> Result<Option<DateTime<FixedOffset>>, Error> {
            v.map(|v| {
                DateTime::parse_from_str(&v, "%Y-%m-%d %H:%M:%S%.f%:z")
                    .or_else(|_| DateTime::parse_from_rfc3339(&v))
                    .map_err(|_| bad(k, &v))
            })
            .transpose()
        };
        let lsn = |k: &str, v: Option<String>| -> Result<Option<Lsn>, Error> {
            v.map(|v| v.parse::<Lsn>().map_err(|_| bad(k, &v)))
                .transpose()
        };
        let segment = |k: &str, v: Option<String>| -> Result<Option<SegmentName>, Error> {
            v.map(|v| match v.parse::<WalFileName>() {
                Ok(WalFileName::Segment(s)) => Ok(s),
                _ => Err(bad(k, &v)),
            })
            .transpose()
        };
        let status = take("status")
            .map(|s| BackupStatus::parse(&s))
            .unwrap_or(BackupStatus::Other("EMPTY".into()));
        let tablespaces = match take("tablespaces") {
            None => Vec::new(),
            Some(v) => {
                let parsed = pyrepr::parse(&v).ok_or_else(|| bad("tablespaces", &v))?;
                parsed
                    .items()
                    .unwrap_or_default()
                    .iter()
                    .map(|t| {
                        let f = t
                            .items()
                            .filter(|f| f.len() == 3)
                            .ok_or_else(|| bad("tablespaces", &v))?;
                        Ok(Tablespace {
                            name: f[0].as_str().unwrap_or_default().to_string(),
                            oid: f[1]
                                .as_int()
                                .and_then(|o| u32::try_from(o).ok())
                                .ok_or_else(|| bad("tablespaces", &v))?,
                            location: f[2].as_str().unwrap_or_default().to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>, Error>>()?
            }
        };
        let backup_label = match take("backup_label") {
            None => None,
            Some(v) => Some(
                pyrepr::parse(&v)
                    .and_then(|p| p.as_str().map(str::to_string))
                    .ok_or_else(|| bad("backup_label", &v))?,
            ),
        };
        let total_time = take("copy_stats").and_then(|v| match pyrepr::parse(&v) {
            Some(PyValue::Dict(items)) => items.iter().find_map(|(k, v)| match (k, v) {
                (PyValue::Str(k), PyValue::Float(t)) if k == "total_time" => Some(*t),
                (PyValue::Str(k), PyValue::Int(t)) if k == "total_time" => Some(*t as f64),
                _ => None,
            }),
            _ => None,
        });
        let info = BackupInfo {
            backup_name: take("backup_name"),
            error: take("error"),
            server_name: take("server_name").unwrap_or_default(),
            systemid: take("systemid"),
            version: small("version", take("version"), 1)?,
            timeline: small("timeline", take("timeline"), 1)?,
            pgdata: take("pgdata"),
            config_file: take("config_file"),
            hba_file: take("hba_file"),
            ident_file: take("ident_file"),
            begin_time: time("begin_time", take("begin_time"))?,
            end_time: time("end_time", take("end_time"))?,
            begin_xlog: lsn("begin_xlog", take("begin_xlog"))?,
            end_xlog: lsn("end_xlog", take("end_xlog"))?,
            begin_wal: segment("begin_wal", take("begin_wal"))?,
            end_wal: segment("end_wal", take("end_wal"))?,
            begin_offset: num("begin_offset", take("begin_offset"))?,
            end_offset: num("end_offset", take("end_offset"))?,
            size: num("size", take("size"))?,
            xlog_segment_size: num("xlog_segment_size", take("xlog_segment_size"))?,
            backup_id,
            status,
            tablespaces,
            backup_label,
            total_time,
            extra: BTreeMap::new(),
        };
        if let Some(seg) = info.xlog_segment_size {
            if !seg.is_power_of_two() || !(1 << 20..=1 << 30).contains(&seg) {
                return Err(Error::Corrupt(format!(
                    "{what}: xlog_segment_size={seg} is not a WAL segment size (a power of two \
                     from 1 MiB to 1 GiB): the file is damaged"
                )));
            }
        }
        if let (Some(b), Some(e)) = (info.begin_xlog, info.end_xlog) {
            if b > e {
                return Err(Error::Corrupt(format!(
                    "{what}: the backup ends (end_xlog={e}) before it begins (begin_xlog={b}): \
                     the file is damaged"
                )));
            }
        }
        // Fields pitr writes itself with fixed values are not "extra".
        for k in ["compression", "deduplicated_size", "included_files", "mode"] {
            raw.remove(k);
        }
        Ok(BackupInfo { extra: raw, ..info })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BARMAN: &str = r#"backup_label='START WAL LOCATION: 4/E4000028 (file 0000000100000004000000E4)\nCHECKPOINT LOCATION: 4/E4000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-22 03:41:55 UTC\nLABEL: Barman backup cloud 20261122T034155\nSTART TIMELINE: 1\n'
backup_name=tsdemo
begin_offset=40
begin_time=2026-11-22 03:41:55.165392+00:00
begin_wal=0000000100000004000000E4
begin_xlog=4/E4000028
children_backup_ids=None
cluster_size=1105877549
compression=None
config_file=/var/lib/postgresql/data/postgresql.conf
copy_stats={'total_time': 84.629754, 'number_of_workers': 2, 'copy_time': 67.3071}
data_checksums=off
deduplicated_size=None
encryption=None
end_offset=312
end_time=2026-11-22 03:43:17.139701+00:00
end_wal=0000000100000004000000E4
end_xlog=4/E4000138
error=None
hba_file=/var/lib/postgresql/data/pg_hba.conf
ident_file=/var/lib/postgresql/data/pg_ident.conf
included_files=['/var/lib/postgresql/data/postgresql.auto.conf']
mode=None
parent_backup_id=None
pgdata=/var/lib/postgresql/data
server_name=cloud
size=None
status=DONE
summarize_wal=None
systemid=7710820884366838347
tablespaces=[('ts1', 16592, '/srv/tblspc')]
timeline=1
version=150018
xlog_segment_size=16777216
"#;

    #[test]
    fn malformed_fields_are_errors_naming_the_file_and_the_field() {
        let id: BackupId = "20261122T034155".parse().unwrap();
        let what = "main/base/20261122T034155/backup.info";
        for (field, value, why) in [
            ("xlog_segment_size", "0", "not a WAL segment size"),
            ("xlog_segment_size", "3000000", "not a WAL segment size"),
            ("xlog_segment_size", "-16777216", "cannot be read"),
            ("timeline", "0", "cannot be read"),
            ("timeline", "99999999999", "cannot be read"),
            ("version", "1e9", "cannot be read"),
            ("end_xlog", "4/E4000000", "before it begins"),
            ("begin_xlog", "4/G", "cannot be read"),
            ("begin_time", "yesterday", "cannot be read"),
            ("begin_wal", "00000001.history", "cannot be read"),
            ("tablespaces", "[('ts1', 'oid', '/x')]", "cannot be read"),
            ("tablespaces", "[('ts1'", "cannot be read"),
            ("backup_label", "'unterminated", "cannot be read"),
        ] {
            let text: String = BARMAN
                .lines()
                .map(|l| match l.split_once('=') {
                    Some((k, _)) if k == field => format!("{k}={value}\n"),
                    _ => format!("{l}\n"),
                })
                .collect();
            let e = BackupInfo::parse(id.clone(), &text, what).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt, "{field}: {e}");
            let e = e.to_string();
            assert!(
                e.contains(what) && e.contains(field) && e.contains(why),
                "{e}"
            );
        }
        // A line that is not key=value, and unknown fields (kept, not fatal).
        let e = BackupInfo::parse(id.clone(), "status=DONE\ngarbage\n", what).unwrap_err();
        assert!(e.to_string().contains("'garbage' is not key=value"), "{e}");
        let info =
            BackupInfo::parse(id, &format!("{BARMAN}future_field={{'a': 1}}\n"), what).unwrap();
        assert_eq!(
            info.extra.get("future_field").map(String::as_str),
            Some("{'a': 1}")
        );
    }

    #[test]
    fn reads_what_barman_writes() {
        let id: BackupId = "20261122T034155".parse().unwrap();
        let info = BackupInfo::parse(id, BARMAN, "backup.info").unwrap();
        assert_eq!(info.status, BackupStatus::Done);
        assert_eq!(info.backup_name.as_deref(), Some("tsdemo"));
        assert_eq!(info.begin_xlog, Some(Lsn(0x4_E400_0028)));
        assert_eq!(
            info.end_wal.map(|s| s.to_string()).as_deref(),
            Some("0000000100000004000000E4")
        );
        assert_eq!(info.version, Some(150018));
        assert_eq!(
            info.tablespaces,
            vec![Tablespace {
                name: "ts1".into(),
                oid: 16592,
                location: "/srv/tblspc".into()
            }]
        );
        assert!(info
            .backup_label
            .as_deref()
            .unwrap()
            .contains("\nCHECKPOINT LOCATION: 4/E4000060\n"));
        assert_eq!(info.total_time, Some(84.629754));
        assert_eq!(
            info.begin_time.unwrap().to_rfc3339(),
            "2026-11-22T03:41:55.165392+00:00"
        );
        assert_eq!(
            info.extra.get("cluster_size").map(String::as_str),
            Some("1105877549")
        );
    }

    #[test]
    fn writes_sorted_barman_lines_and_reads_them_back() {
        let id: BackupId = "20261122T034155".parse().unwrap();
        let mut info = BackupInfo::new(id.clone(), "main");
        info.status = BackupStatus::Done;
        info.backup_label = Some(
            "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nLABEL: it's\n".into(),
        );
        info.begin_xlog = Some(Lsn(0x200_0028));
        info.tablespaces = vec![Tablespace {
            name: "ts".into(),
            oid: 16384,
            location: "/t".into(),
        }];
        info.error = Some("two\nlines".into());
        info.begin_time =
            Some(DateTime::parse_from_rfc3339("2026-11-22T03:41:55.1+00:00").unwrap());
        let text = info.to_barman_text();
        let keys: Vec<&str> = text.lines().map(|l| l.split('=').next().unwrap()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(text.contains("begin_time=2026-11-22 03:41:55.100000+00:00\n"));
        assert!(text.contains("tablespaces=[('ts', 16384, '/t')]\n"));
        assert!(text.contains("error=two lines\n"));
        assert!(
            !text.contains("backup_name"),
            "hidden when unset, as Barman does"
        );
        let back = BackupInfo::parse(id, &text, "x").unwrap();
        assert_eq!(back.backup_label, info.backup_label);
        assert_eq!(back.tablespaces, info.tablespaces);
        assert_eq!(back.begin_time, info.begin_time);
        assert!(back.extra.is_empty(), "{:?}", back.extra);
    }
}
