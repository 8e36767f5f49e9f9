//! Backup ids as Barman makes them: the local start time, `YYYYMMDDTHHMMSS`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Local, NaiveDateTime};

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId(String);

impl BackupId {
    pub fn from_time(t: DateTime<Local>) -> Self {
        BackupId(t.format("%Y%m%dT%H%M%S").to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BackupId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%S")
            .map(|_| BackupId(s.to_string()))
            .map_err(|_| {
                Error::Config(format!(
                    "'{s}' is not a backup id: expected YYYYMMDDTHHMMSS, e.g. 20261122T034155 \
                     (see `pitr backup list`)"
                ))
            })
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for BackupId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_barman_ids() {
        assert_eq!(
            "20261122T034155".parse::<BackupId>().unwrap().as_str(),
            "20261122T034155"
        );
        assert!("20261322T034155".parse::<BackupId>().is_err());
        assert!("latest".parse::<BackupId>().is_err());
    }
}
