//! BASE_BACKUP over a replication connection, streamed as events.
//!
//! Message sequence of `BASE_BACKUP (...)` on PostgreSQL 15 and later (the
//! "copystream" protocol), as observed against PostgreSQL 15.18:
//!
//! 1. Result set: RowDescription (`recptr` text, `tli` int8), one DataRow
//!    (backup start LSN and timeline), CommandComplete `SELECT`.
//! 2. Result set: RowDescription (`spcoid` oid, `spclocation` text, `size`
//!    int8 in kB, NULL without PROGRESS), one DataRow per tablespace, the
//!    main data directory last with NULL oid and location, CommandComplete
//!    `SELECT`.
//! 3. CopyOutResponse (no columns), then CopyData messages whose first byte
//!    says what follows:
//!    - `n` new archive: archive name and tablespace location as C strings
//!      (location empty for the main data directory). Tablespace archives
//!      (`<oid>.tar`) come first, `base.tar` last.
//!    - `d` archive data: a piece of the tar stream (32 KiB at most on 15).
//!      Each archive is a complete tar, ending with two zero blocks.
//!    - `p` progress: int8, archive bytes sent so far, counted over all
//!      archives (with PROGRESS). Sent now and then during an archive and
//!      always at its end, so the last one is the total.
//!    - `m` manifest start: the `d` messages that follow are the
//!      backup_manifest (JSON), after the last archive.
//!
//!    then CopyDone.
//! 4. Result set: RowDescription, one DataRow (backup end LSN and
//!    timeline), CommandComplete `SELECT`.
//! 5. CommandComplete `BASE_BACKUP`, ReadyForQuery.
//!
//! An ErrorResponse can come at any point and is followed by ReadyForQuery
//! (or by the end of the connection for FATAL). With data checksums on,
//! a checksum failure is reported only at the very end: WARNING notices
//! per file during the copy, then ERROR "checksum verification failure
//! during base backup" after the end result set (step 4), in place of
//! step 5. So [`BackupEvent::Finished`] is only yielded once
//! ReadyForQuery has arrived.

use bytes::Bytes;
use postgres_protocol::message::backend::Message;

use super::framing::server_error;
use super::replication::ReplicationConnection;
use crate::error::{Error, Result};
use crate::wal::{Lsn, TimelineId};

/// CHECKPOINT option: start the backup at once (`fast`) or after a
/// checkpoint spread over `checkpoint_completion_target` (`spread`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    Fast,
    Spread,
}

/// What to ask BASE_BACKUP for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupOptions {
    /// The backup label (shown in backup_label and pg_stat_progress_basebackup).
    pub label: String,
    /// Ask for tablespace sizes and progress messages.
    pub progress: bool,
    pub checkpoint: Checkpoint,
    /// Ask for a backup_manifest with SHA-256 checksums.
    pub manifest: bool,
    /// WAIT option: whether the server waits, at the end, for the WAL the
    /// backup needs to be archived. false means don't wait.
    pub wait_for_wal_archive: bool,
    /// MAX_RATE in kB/s (PostgreSQL accepts 32 to 1048576).
    pub max_rate: Option<u32>,
}

impl BaseBackupOptions {
    /// Defaults for a backup tool: progress, fast checkpoint, a manifest,
    /// no waiting for the archiver, no rate limit.
    pub fn new(label: impl Into<String>) -> BaseBackupOptions {
        BaseBackupOptions {
            label: label.into(),
            progress: true,
            checkpoint: Checkpoint::Fast,
            manifest: true,
            wait_for_wal_archive: false,
            max_rate: None,
        }
    }

    /// The BASE_BACKUP command (PostgreSQL 15 option syntax), e.g.
    /// `BASE_BACKUP ( LABEL 'x', PROGRESS, CHECKPOINT 'fast', MANIFEST 'yes',
    /// MANIFEST_CHECKSUMS 'SHA256', WAIT false )`.
    pub fn command(&self) -> Result<String> {
        if self.label.contains('\0') {
            return Err(Error::Config(
                "backup label contains a NUL character".into(),
            ));
        }
        // PostgreSQL keeps labels in MAXPGPATH (1024) bytes.
        if self.label.len() >= 1024 {
            return Err(Error::Config(format!(
                "backup label is {} bytes long: PostgreSQL accepts at most 1023",
                self.label.len()
            )));
        }
        let mut opts = vec![format!("LABEL '{}'", self.label.replace('\'', "''"))];
        if self.progress {
            opts.push("PROGRESS".into());
        }
        opts.push(match self.checkpoint {
            Checkpoint::Fast => "CHECKPOINT 'fast'".into(),
            Checkpoint::Spread => "CHECKPOINT 'spread'".into(),
        });
        if self.manifest {
            opts.push("MANIFEST 'yes'".into());
            opts.push("MANIFEST_CHECKSUMS 'SHA256'".into());
        } else {
            opts.push("MANIFEST 'no'".into());
        }
        opts.push(format!("WAIT {}", self.wait_for_wal_archive));
        if let Some(rate) = self.max_rate {
            if !(32..=1_048_576).contains(&rate) {
                return Err(Error::Config(format!(
                    "maximum transfer rate {rate} kB/s is out of range: PostgreSQL accepts 32 \
                     to 1048576 kB/s"
                )));
            }
            opts.push(format!("MAX_RATE {rate}"));
        }
        Ok(format!("BASE_BACKUP ( {} )", opts.join(", ")))
    }
}

/// One tablespace of the backup, from the second result set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablespaceInfo {
    /// None for the main data directory.
    pub oid: Option<u32>,
    /// The tablespace directory on the server; None for the main data directory.
    pub location: Option<String>,
    /// Estimated size (the server reports kB); None without PROGRESS.
    pub size_bytes: Option<u64>,
}

/// What a BASE_BACKUP stream yields, in this order: Started, Tablespaces,
/// then for each archive an Archive followed by its Data (with Progress
/// among them), then ManifestStart and ManifestData when a manifest was
/// asked for, then Finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupEvent {
    Started {
        start_lsn: Lsn,
        timeline: TimelineId,
    },
    Tablespaces(Vec<TablespaceInfo>),
    /// A new tar archive starts: `base.tar` or `<oid>.tar`.
    Archive {
        name: String,
        tablespace_location: Option<String>,
    },
    /// A piece of the current archive.
    Data(Bytes),
    /// Archive bytes sent so far, counted over all archives (the server
    /// reports it now and then, and at the end of each archive).
    Progress(u64),
    ManifestStart,
    /// A piece of the backup_manifest.
    ManifestData(Bytes),
    /// The server has finished: the backup needs WAL up to `end_lsn`.
    Finished {
        end_lsn: Lsn,
        timeline: TimelineId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    StartResult,
    TablespaceResult,
    CopyStart,
    Copy,
    EndResult,
    Done,
    Failed,
}

/// The events of one BASE_BACKUP; borrows the connection until it ends.
/// Dropping it before the end leaves the connection unusable.
pub struct BaseBackupStream<'a> {
    conn: &'a mut ReplicationConnection,
    state: State,
    in_manifest: bool,
    in_archive: bool,
    /// After a server error: the connection was read up to ReadyForQuery.
    resynced: bool,
}

impl ReplicationConnection {
    /// Starts BASE_BACKUP (PostgreSQL 15 or newer) and returns its events.
    pub async fn base_backup(&mut self, opts: &BaseBackupOptions) -> Result<BaseBackupStream<'_>> {
        let version = self.server_version_num();
        if version < 150000 {
            return Err(Error::Postgres(format!(
                "PostgreSQL {} is not supported for base backups yet: pitr needs 15 or newer",
                self.parameter("server_version")
                    .map(str::to_string)
                    .unwrap_or_else(|| version.to_string())
            )));
        }
        let command = opts.command()?;
        self.send_query(&command, "starting BASE_BACKUP").await?;
        Ok(BaseBackupStream {
            conn: self,
            state: State::StartResult,
            in_manifest: false,
            in_archive: false,
            resynced: false,
        })
    }
}

impl BaseBackupStream<'_> {
    /// The next event; `Ok(None)` after Finished. A server error (such as a
    /// checksum failure at the end) or a lost connection comes out as `Err`,
    /// and every call after that fails too.
    pub async fn next(&mut self) -> Result<Option<BackupEvent>> {
        match self.state {
            State::Done => return Ok(None),
            State::Failed => {
                return Err(Error::Postgres(
                    "this BASE_BACKUP stream has already failed".into(),
                ))
            }
            _ => {}
        }
        match self.step().await {
            Ok(ev) => Ok(ev),
            Err(e) => {
                self.state = State::Failed;
                if !self.resynced && self.conn.broken.is_none() {
                    self.conn.broken = Some(format!("BASE_BACKUP failed: {e}"));
                }
                Err(e)
            }
        }
    }

    async fn step(&mut self) -> Result<Option<BackupEvent>> {
        match self.state {
            State::StartResult => {
                let (start_lsn, timeline) = self.position_result("the backup start").await?;
                self.state = State::TablespaceResult;
                Ok(Some(BackupEvent::Started {
                    start_lsn,
                    timeline,
                }))
            }
            State::TablespaceResult => {
                let rows = self.result_set("reading the tablespace list").await?;
                let list = rows
                    .into_iter()
                    .map(|row| self.tablespace(row))
                    .collect::<Result<Vec<_>>>()?;
                self.state = State::CopyStart;
                Ok(Some(BackupEvent::Tablespaces(list)))
            }
            State::CopyStart => {
                const DOING: &str = "waiting for the BASE_BACKUP data to start";
                match self.conn.recv(DOING).await? {
                    Message::CopyOutResponse(_) => {
                        self.state = State::Copy;
                        self.copy_event().await
                    }
                    Message::ErrorResponse(body) => Err(self.failed(DOING, &body).await),
                    other => Err(self.conn.protocol_error(DOING, &other)),
                }
            }
            State::Copy => self.copy_event().await,
            State::EndResult => {
                let (end_lsn, timeline) = self.position_result("the backup end").await?;
                // Finished only once the command has completed: a checksum
                // failure is reported after the end position.
                const DOING: &str = "completing BASE_BACKUP";
                loop {
                    match self.conn.recv(DOING).await? {
                        Message::CommandComplete(_) => {}
                        Message::ReadyForQuery(_) => break,
                        Message::ErrorResponse(body) => {
                            return Err(self.failed(DOING, &body).await)
                        }
                        other => return Err(self.conn.protocol_error(DOING, &other)),
                    }
                }
                self.state = State::Done;
                Ok(Some(BackupEvent::Finished { end_lsn, timeline }))
            }
            State::Done | State::Failed => unreachable!("handled in next()"),
        }
    }

    /// The next event of the COPY stream.
    async fn copy_event(&mut self) -> Result<Option<BackupEvent>> {
        const DOING: &str = "streaming BASE_BACKUP";
        match self.conn.recv(DOING).await? {
            Message::CopyData(body) => self.copy_message(body.into_bytes()).map(Some),
            Message::CopyDone => {
                self.state = State::EndResult;
                Box::pin(self.step()).await
            }
            Message::ErrorResponse(body) => Err(self.failed(DOING, &body).await),
            other => Err(self.conn.protocol_error(DOING, &other)),
        }
    }

    /// One CopyData message of the copystream protocol.
    fn copy_message(&mut self, data: Bytes) -> Result<BackupEvent> {
        let Some(&kind) = data.first() else {
            return Err(self.bad("an empty CopyData message"));
        };
        tracing::trace!("CopyData '{}' of {} bytes", kind as char, data.len());
        match kind {
            b'n' => {
                let mut fields = data[1..].split(|b| *b == 0);
                let name = fields.next().filter(|n| !n.is_empty());
                let location = fields.next();
                let (Some(name), Some(location)) = (name, location) else {
                    return Err(self.bad("a malformed new-archive message"));
                };
                if self.in_manifest {
                    return Err(self.bad("a new archive after the manifest"));
                }
                self.in_archive = true;
                let name = String::from_utf8_lossy(name).into_owned();
                let location =
                    (!location.is_empty()).then(|| String::from_utf8_lossy(location).into_owned());
                Ok(BackupEvent::Archive {
                    name,
                    tablespace_location: location,
                })
            }
            b'd' if self.in_manifest => Ok(BackupEvent::ManifestData(data.slice(1..))),
            b'd' if self.in_archive => Ok(BackupEvent::Data(data.slice(1..))),
            b'd' => Err(self.bad("archive data before any archive")),
            b'p' => {
                let bytes: [u8; 8] = data[1..]
                    .try_into()
                    .map_err(|_| self.bad("a malformed progress message"))?;
                Ok(BackupEvent::Progress(
                    i64::from_be_bytes(bytes).max(0) as u64
                ))
            }
            b'm' => {
                self.in_manifest = true;
                self.in_archive = false;
                Ok(BackupEvent::ManifestStart)
            }
            other => Err(self.bad(&format!(
                "a CopyData message of unknown type {:?}",
                other as char
            ))),
        }
    }

    /// A one-row result set of (LSN, timeline).
    async fn position_result(&mut self, what: &str) -> Result<(Lsn, TimelineId)> {
        let doing = format!("reading {what} position");
        let rows = self.result_set(&doing).await?;
        let [row] = rows.as_slice() else {
            return Err(self.bad(&format!("{} rows for {what} position", rows.len())));
        };
        let lsn = row
            .first()
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse::<Lsn>().ok())
            .ok_or_else(|| self.bad(&format!("an invalid LSN for {what}")))?;
        let tli = row
            .get(1)
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse::<u32>().ok())
            .and_then(TimelineId::new)
            .ok_or_else(|| self.bad(&format!("an invalid timeline for {what}")))?;
        Ok((lsn, tli))
    }

    /// One result set: RowDescription, DataRow*, CommandComplete.
    async fn result_set(&mut self, doing: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut rows = Vec::new();
        loop {
            match self.conn.recv(doing).await? {
                Message::RowDescription(_) => {}
                Message::DataRow(row) => rows.push(self.conn.text_row(&row, doing)?),
                Message::CommandComplete(_) => return Ok(rows),
                Message::ErrorResponse(body) => return Err(self.failed(doing, &body).await),
                other => return Err(self.conn.protocol_error(doing, &other)),
            }
        }
    }

    fn tablespace(&self, row: Vec<Option<String>>) -> Result<TablespaceInfo> {
        let mut it = row.into_iter();
        let (oid, location, size) = (
            it.next().flatten(),
            it.next().flatten(),
            it.next().flatten(),
        );
        let oid = oid
            .map(|o| o.parse::<u32>())
            .transpose()
            .map_err(|_| self.bad("an invalid tablespace oid"))?;
        let size_bytes = size
            .map(|s| s.parse::<i64>())
            .transpose()
            .map_err(|_| self.bad("an invalid tablespace size"))?
            .map(|kb| kb.max(0) as u64 * 1024);
        Ok(TablespaceInfo {
            oid,
            location: location.filter(|l| !l.is_empty()),
            size_bytes,
        })
    }

    async fn failed(
        &mut self,
        doing: &str,
        body: &postgres_protocol::message::backend::ErrorResponseBody,
    ) -> Error {
        let err = server_error(&self.conn.framed.target, doing, body);
        let err = self.conn.finish_after_error(err, doing).await;
        self.resynced = self.conn.broken.is_none();
        err
    }

    fn bad(&self, what: &str) -> Error {
        Error::Postgres(format!(
            "the PostgreSQL server at {} sent {what} during BASE_BACKUP",
            self.conn.framed.target
        ))
    }
}

impl Drop for BaseBackupStream<'_> {
    fn drop(&mut self) {
        if !matches!(self.state, State::Done | State::Failed) && self.conn.broken.is_none() {
            self.conn.broken = Some("a BASE_BACKUP stream was dropped before its end".to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_text() {
        let mut o = BaseBackupOptions::new("it's \"mine\"");
        assert_eq!(
            o.command().unwrap(),
            "BASE_BACKUP ( LABEL 'it''s \"mine\"', PROGRESS, CHECKPOINT 'fast', MANIFEST 'yes', \
             MANIFEST_CHECKSUMS 'SHA256', WAIT false )"
        );
        o.progress = false;
        o.checkpoint = Checkpoint::Spread;
        o.manifest = false;
        o.wait_for_wal_archive = true;
        o.max_rate = Some(1024);
        assert_eq!(
            o.command().unwrap(),
            "BASE_BACKUP ( LABEL 'it''s \"mine\"', CHECKPOINT 'spread', MANIFEST 'no', WAIT true, \
             MAX_RATE 1024 )"
        );
        o.max_rate = Some(31);
        assert!(o
            .command()
            .unwrap_err()
            .to_string()
            .contains("32 to 1048576"));
        o.max_rate = None;
        o.label = "x\0y".into();
        assert!(o.command().is_err());
    }
}
