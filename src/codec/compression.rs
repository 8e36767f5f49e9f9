//! Compression choices, their levels, and the object-name suffixes
//! barman-cloud uses for them.
//!
//! Stream formats, as barman-cloud writes and reads them (barman 3.19):
//!
//! | name | suffix | format |
//! | --- | --- | --- |
//! | gzip | `.gz` | gzip (RFC 1952); pitr reads multi-member streams |
//! | bzip2 | `.bz2` | bzip2; multi-stream read |
//! | xz | `.xz` | xz container (LZMA2), CRC64 check |
//! | snappy | `.snappy` | snappy *framing* format (stream identifier `sNaPpY`, CRC-32C per chunk), not raw snappy |
//! | zstd | `.zst` | zstd frame(s); pitr writes a content checksum |
//! | lz4 | `.lz4` | LZ4 frame format (magic `04 22 4D 18`), not raw blocks; pitr writes a content checksum |
//!
//! barman-cloud-wal-archive writes all six for WAL; barman-cloud-backup
//! writes only gzip, bzip2, snappy and lz4 tars, and barman-cloud-restore
//! skips a `.tar.zst` or `.tar.xz` (see [`Compression::barman_restores_backups`]).

use std::fmt;

use crate::error::Error;

/// Suffixes barman-cloud may write; readers detect compression from these.
pub const KNOWN_SUFFIXES: [&str; 7] = ["", ".gz", ".bz2", ".xz", ".snappy", ".zst", ".lz4"];

/// The names `--compression` accepts (besides the aliases `gz`, `bz2`, `zst`).
pub const NAMES: &str = "zstd, lz4, gzip, bzip2, xz, snappy or none";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip {
        level: u32,
    },
    Bzip2 {
        level: u32,
    },
    Xz {
        level: u32,
    },
    Zstd {
        level: i32,
    },
    /// LZ4 frame format; one level (lz4_flex's fast mode).
    Lz4,
    /// Snappy framing format; snappy has no levels.
    Snappy,
}

impl Compression {
    pub const DEFAULT_GZIP_LEVEL: u32 = 1;
    pub const DEFAULT_BZIP2_LEVEL: u32 = 9;
    pub const DEFAULT_XZ_LEVEL: u32 = 3;
    pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

    /// The suffix objects written with this compression get.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip { .. } => ".gz",
            Compression::Bzip2 { .. } => ".bz2",
            Compression::Xz { .. } => ".xz",
            Compression::Zstd { .. } => ".zst",
            Compression::Lz4 => ".lz4",
            Compression::Snappy => ".snappy",
        }
    }

    /// How an object stored with `suffix` must be read (the level is the
    /// default: it does not matter for reading); an unknown suffix is an
    /// error naming the object.
    pub fn for_suffix(suffix: &str, object: &str) -> Result<Compression, Error> {
        Ok(match suffix {
            "" => Compression::None,
            ".gz" => Self::default_for("gzip")?,
            ".bz2" => Self::default_for("bzip2")?,
            ".xz" => Self::default_for("xz")?,
            ".zst" => Self::default_for("zstd")?,
            ".lz4" => Compression::Lz4,
            ".snappy" => Compression::Snappy,
            other => {
                return Err(Error::Config(format!(
                    "{object} has the suffix '{other}', which is not a compression barman-cloud \
                     or pitr writes ({})",
                    KNOWN_SUFFIXES[1..].join(" ")
                )))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip { .. } => "gzip",
            Compression::Bzip2 { .. } => "bzip2",
            Compression::Xz { .. } => "xz",
            Compression::Zstd { .. } => "zstd",
            Compression::Lz4 => "lz4",
            Compression::Snappy => "snappy",
        }
    }

    /// The compression called `name`, at its default level.
    pub fn default_for(name: &str) -> Result<Compression, Error> {
        Self::parse(name, None)
    }

    /// The compression called `name` (`--compression` / `PITR_COMPRESSION`)
    /// at `level` (`--compression-level` / `PITR_COMPRESSION_LEVEL`), or at
    /// its default level. A level outside the compression's range, or a
    /// level for one that has none, is an error naming both settings.
    pub fn parse(name: &str, level: Option<i32>) -> Result<Compression, Error> {
        let ranged = |lo: i32, hi: i32, default: i32| -> Result<i32, Error> {
            match level {
                None => Ok(default),
                Some(l) if (lo..=hi).contains(&l) => Ok(l),
                Some(l) => Err(Error::Config(format!(
                    "compression level {l} (--compression-level / PITR_COMPRESSION_LEVEL) is out \
                     of range for {name}: use {lo} (fastest) to {hi} (smallest)"
                ))),
            }
        };
        let levelless = |c: Compression| match level {
            None => Ok(c),
            Some(l) => Err(Error::Config(format!(
                "{} has no compression levels, but --compression-level / \
                 PITR_COMPRESSION_LEVEL is {l}: unset it",
                c.name()
            ))),
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "gzip" | "gz" => Ok(Compression::Gzip {
                level: ranged(1, 9, Self::DEFAULT_GZIP_LEVEL as i32)? as u32,
            }),
            "bzip2" | "bz2" => Ok(Compression::Bzip2 {
                level: ranged(1, 9, Self::DEFAULT_BZIP2_LEVEL as i32)? as u32,
            }),
            "xz" => Ok(Compression::Xz {
                level: ranged(0, 9, Self::DEFAULT_XZ_LEVEL as i32)? as u32,
            }),
            "zstd" | "zst" => Ok(Compression::Zstd {
                level: ranged(1, 19, Self::DEFAULT_ZSTD_LEVEL)?,
            }),
            "lz4" => levelless(Compression::Lz4),
            "snappy" => levelless(Compression::Snappy),
            "none" => levelless(Compression::None),
            other => Err(Error::Config(format!(
                "unknown compression '{other}' (--compression / PITR_COMPRESSION): use {NAMES}"
            ))),
        }
    }

    /// Whether barman-cloud-restore (3.19) restores a base backup whose
    /// tars carry this compression: it reads `.tar`, `.tar.gz`,
    /// `.tar.bz2`, `.tar.snappy` and `.tar.lz4` only.
    pub fn barman_restores_backups(self) -> bool {
        !matches!(self, Compression::Zstd { .. } | Compression::Xz { .. })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_barman_suffix_reads() {
        for s in KNOWN_SUFFIXES {
            let c = Compression::for_suffix(s, "obj").unwrap();
            assert_eq!(c.suffix(), s);
            assert_eq!(Compression::default_for(c.name()).unwrap(), c);
        }
        let e = Compression::for_suffix(".rar", "wals/x.rar").unwrap_err();
        assert!(e.to_string().contains("wals/x.rar"), "{e}");
    }

    #[test]
    fn levels_are_checked_per_compression() {
        assert_eq!(
            Compression::parse("zstd", Some(9)).unwrap(),
            Compression::Zstd { level: 9 }
        );
        assert_eq!(
            Compression::parse("gz", None).unwrap(),
            Compression::Gzip { level: 1 }
        );
        for (name, level) in [
            ("gzip", 10),
            ("zstd", 0),
            ("zstd", 23),
            ("xz", 10),
            ("bzip2", 0),
        ] {
            let e = Compression::parse(name, Some(level))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("PITR_COMPRESSION_LEVEL") && e.contains(name),
                "{e}"
            );
        }
        let e = Compression::parse("lz4", Some(3)).unwrap_err().to_string();
        assert!(e.contains("no compression levels"), "{e}");
        let e = Compression::parse("brotli", None).unwrap_err().to_string();
        assert!(e.contains("brotli") && e.contains("zstd"), "{e}");
    }
}
