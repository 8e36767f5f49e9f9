//! What a caller asks of a backup, and how it hears how the backup goes.

use std::time::Duration;

use crate::pgwire::Checkpoint;

#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// A name to find the backup by (Barman's `--name`).
    pub name: Option<String>,
    pub checkpoint: Checkpoint,
    /// How long to wait for the backup's last WAL segment to be archived.
    pub wal_timeout: Duration,
    /// Server-side rate limit in kB/s (BASE_BACKUP's MAX_RATE).
    pub max_rate: Option<u32>,
}

/// Where a backup is, for a progress bar or periodic log lines.
pub trait Progress: Send + Sync {
    /// The server's estimate of the bytes to send, once known.
    fn total(&self, bytes: u64);
    /// Bytes the server has sent so far.
    fn advance(&self, done: u64);
    /// A new phase ("waiting for WAL", ...).
    fn phase(&self, what: &str);
}

/// Parses PostgreSQL's `SHOW wal_segment_size` (`16MB`, `1GB`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    Some(n * mult)
}
