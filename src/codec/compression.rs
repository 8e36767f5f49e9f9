//! Compression choices and the object-name suffixes Barman uses for them.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Suffixes barman-cloud may write; readers detect compression from these.
pub const KNOWN_SUFFIXES: [&str; 7] = ["", ".gz", ".bz2", ".xz", ".snappy", ".zst", ".lz4"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip { level: u32 },
}

impl Compression {
    pub const DEFAULT_GZIP_LEVEL: u32 = 1;

    /// The suffix objects written with this compression get.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip { .. } => ".gz",
        }
    }

    /// How an object stored with `suffix` must be read; an error names the
    /// object and says pitr cannot read that compression yet.
    pub fn for_suffix(suffix: &str, object: &str) -> Result<Compression, Error> {
        match suffix {
            "" => Ok(Compression::None),
            ".gz" => Ok(Compression::Gzip {
                level: Self::DEFAULT_GZIP_LEVEL,
            }),
            other => Err(Error::Config(format!(
                "{object} is compressed with '{}', which pitr cannot read yet: \
                 restore it with barman-cloud-wal-restore, or re-archive with gzip",
                other.trim_start_matches('.')
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip { .. } => "gzip",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "gzip" | "gz" => Ok(Compression::Gzip {
                level: Self::DEFAULT_GZIP_LEVEL,
            }),
            "none" => Ok(Compression::None),
            other => Err(Error::Config(format!(
                "unknown compression '{other}' (--compression / PITR_COMPRESSION): use gzip or none"
            ))),
        }
    }
}
