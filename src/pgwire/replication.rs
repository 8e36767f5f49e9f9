//! A physical replication connection (`replication=true` in the startup
//! message): the walsender's small command language (IDENTIFY_SYSTEM,
//! SHOW, BASE_BACKUP, ...) over the simple query protocol.
//!
//! Simple query sequence, as observed from PostgreSQL 15: Query, then for
//! each result set RowDescription, DataRow*, CommandComplete (commands
//! without rows send only CommandComplete), then ReadyForQuery. On failure:
//! ErrorResponse, then ReadyForQuery, and the connection stays usable.

use postgres_protocol::message::backend::{DataRowBody, Message};
use postgres_protocol::message::frontend;

use super::auth;
use super::conninfo::ConnectParams;
use super::framing::{server_error, unexpected, Framed, Stream};
use crate::error::{Error, Result};
use crate::wal::{Lsn, TimelineId};

/// An open physical replication connection.
pub struct ReplicationConnection {
    pub(crate) framed: Framed,
    server_version_num: u32,
    /// Set while the protocol state is unknown (a dropped connection, an
    /// abandoned BASE_BACKUP stream): every later call fails with this.
    pub(crate) broken: Option<String>,
}

/// The answer to IDENTIFY_SYSTEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifySystem {
    /// The cluster's unique id (as `pg_control_system()` and WAL page headers show).
    pub system_identifier: u64,
    /// The server's current timeline.
    pub timeline: TimelineId,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database connected to: None on a physical replication connection.
    pub dbname: Option<String>,
}

impl ReplicationConnection {
    /// Connects and authenticates, within `params.connect_timeout`.
    pub async fn connect(params: &ConnectParams) -> Result<ReplicationConnection> {
        // Physical replication: pg_hba.conf matches the `replication`
        // keyword (replication=database would match the database name).
        Self::open(params, &[("replication", "true")]).await
    }

    /// An ordinary (non-replication) session over the same client, for the
    /// few catalog queries a backup needs (tablespace names). Connects to
    /// `params.dbname`, or `postgres` when none is given.
    pub async fn connect_sql(params: &ConnectParams) -> Result<ReplicationConnection> {
        let mut params = params.clone();
        params.dbname.get_or_insert_with(|| "postgres".to_string());
        Self::open(&params, &[]).await
    }

    async fn open(params: &ConnectParams, extra: &[(&str, &str)]) -> Result<ReplicationConnection> {
        let open = async {
            let stream = Stream::connect(params).await?;
            let mut framed = Framed::new(stream, params.describe());
            auth::startup(&mut framed, params, extra).await?;
            Ok::<_, Error>(framed)
        };
        let framed = if params.connect_timeout.is_zero() {
            open.await?
        } else {
            tokio::time::timeout(params.connect_timeout, open)
                .await
                .map_err(|_| {
                    Error::Postgres(format!(
                        "timed out after {} s connecting to PostgreSQL at {} (connect_timeout / \
                         PGCONNECT_TIMEOUT)",
                        params.connect_timeout.as_secs(),
                        params.describe()
                    ))
                })??
        };
        let mut conn = ReplicationConnection {
            framed,
            server_version_num: 0,
            broken: None,
        };
        conn.server_version_num = match conn.framed.parameter("server_version") {
            Some(v) => parse_server_version(v),
            None => None,
        }
        .unwrap_or(0);
        if conn.server_version_num == 0 {
            let rows = conn.simple_query("SHOW server_version_num").await?;
            conn.server_version_num = rows
                .first()
                .and_then(|r| r.first())
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    Error::Postgres(format!(
                        "the PostgreSQL server at {} did not report its version",
                        conn.framed.target
                    ))
                })?;
        }
        Ok(conn)
    }

    /// The server's version as a number, e.g. 150018 for 15.18 and 90624
    /// for 9.6.24 (as `server_version_num`).
    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// A run-time parameter the server reported at startup or since
    /// (`server_version`, `server_encoding`, `integer_datetimes`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.framed.parameter(name)
    }

    /// Where this connection goes, for messages: `socket "..."` or
    /// `host "h" port p`.
    pub fn describe(&self) -> &str {
        &self.framed.target
    }

    /// IDENTIFY_SYSTEM: the system identifier, timeline and WAL position.
    pub async fn identify_system(&mut self) -> Result<IdentifySystem> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let bad = |why: &str| {
            Error::Postgres(format!(
                "the PostgreSQL server at {} answered IDENTIFY_SYSTEM with {why}",
                self.framed.target
            ))
        };
        let row = match rows.as_slice() {
            [row] if row.len() >= 3 => row,
            _ => return Err(bad("an unexpected result shape")),
        };
        let text = |i: usize| row[i].as_deref().ok_or_else(|| bad("a NULL value"));
        let system_identifier = text(0)?
            .parse::<u64>()
            .map_err(|_| bad("an invalid system identifier"))?;
        let timeline = text(1)?
            .parse::<u32>()
            .ok()
            .and_then(TimelineId::new)
            .ok_or_else(|| bad("an invalid timeline"))?;
        let xlogpos = text(2)?
            .parse::<Lsn>()
            .map_err(|e| bad(&format!("an invalid WAL position: {e}")))?;
        let dbname = row.get(3).cloned().flatten();
        Ok(IdentifySystem {
            system_identifier,
            timeline,
            xlogpos,
            dbname,
        })
    }

    /// Runs one command and returns its rows as text (NULL as None). A
    /// replication connection accepts SHOW, IDENTIFY_SYSTEM,
    /// TIMELINE_HISTORY, READ_REPLICATION_SLOT, CREATE/DROP_REPLICATION_SLOT;
    /// commands that stream data (BASE_BACKUP, START_REPLICATION) have their
    /// own methods.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let doing = format!("running {}", short(sql));
        self.send_query(sql, &doing).await?;
        let mut rows = Vec::new();
        loop {
            match self.recv(&doing).await? {
                Message::RowDescription(_) | Message::CommandComplete(_) => {}
                Message::EmptyQueryResponse => {}
                Message::DataRow(row) => rows.push(self.text_row(&row, &doing)?),
                Message::ReadyForQuery(_) => return Ok(rows),
                Message::ErrorResponse(body) => {
                    let err = server_error(&self.framed.target, &doing, &body);
                    return Err(self.finish_after_error(err, &doing).await);
                }
                Message::CopyOutResponse(_) | Message::CopyInResponse(_) => {
                    let why = format!(
                        "{} started a COPY, which simple_query cannot consume",
                        short(sql)
                    );
                    self.broken = Some(why.clone());
                    return Err(Error::Postgres(why));
                }
                other => return Err(self.protocol_error(&doing, &other)),
            }
        }
    }

    /// Ends the session politely (Terminate), so the server logs no
    /// "unexpected EOF".
    pub async fn close(mut self) -> Result<()> {
        frontend::terminate(&mut self.framed.write_buf);
        self.framed.flush().await
    }

    // ---- helpers shared with base_backup.rs ----

    pub(crate) fn check_usable(&self) -> Result<()> {
        match &self.broken {
            Some(why) => Err(Error::Postgres(format!(
                "the replication connection to {} is no longer usable: {why}",
                self.framed.target
            ))),
            None => Ok(()),
        }
    }

    pub(crate) async fn send_query(&mut self, sql: &str, doing: &str) -> Result<()> {
        self.check_usable()?;
        frontend::query(sql, &mut self.framed.write_buf)
            .map_err(|e| Error::Config(format!("invalid command text: {e}")))?;
        if let Err(e) = self.framed.flush().await {
            self.broken = Some(format!("sending failed while {doing}"));
            return Err(e);
        }
        Ok(())
    }

    /// The next message; a transport failure marks the connection broken.
    pub(crate) async fn recv(&mut self, doing: &str) -> Result<Message> {
        self.check_usable()?;
        match self.framed.recv(doing).await {
            Ok(m) => Ok(m),
            Err(e) => {
                self.broken = Some(format!("the connection failed while {doing}"));
                Err(e)
            }
        }
    }

    /// After an ErrorResponse: reads up to ReadyForQuery, so that the
    /// connection can be used again, and returns `err`.
    pub(crate) async fn finish_after_error(&mut self, err: Error, doing: &str) -> Error {
        loop {
            match self.framed.recv(doing).await {
                Ok(Message::ReadyForQuery(_)) => {
                    self.broken = None;
                    return err;
                }
                Ok(_) => {}
                Err(_) => {
                    // A FATAL error closes the connection: nothing to drain.
                    self.broken = Some(format!("the server ended the session while {doing}"));
                    return err;
                }
            }
        }
    }

    /// An out-of-place message: the protocol state is unknown from here on.
    pub(crate) fn protocol_error(&mut self, doing: &str, msg: &Message) -> Error {
        let err = unexpected(&self.framed.target, doing, msg);
        self.broken = Some(err.to_string());
        err
    }

    pub(crate) fn text_row(&self, row: &DataRowBody, doing: &str) -> Result<Vec<Option<String>>> {
        use fallible_iterator::FallibleIterator;
        let buf = row.buffer();
        row.ranges()
            .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned())))
            .collect()
            .map_err(|e| {
                Error::Postgres(format!(
                    "the PostgreSQL server at {} sent a malformed row while {doing}: {e}",
                    self.framed.target
                ))
            })
    }
}

/// `server_version` as PostgreSQL reports it ("15.18 (Debian 15.18-1)",
/// "16beta1", "9.6.24") to the `server_version_num` form (150018, 160000,
/// 90624).
pub fn parse_server_version(v: &str) -> Option<u32> {
    let numeric: String = v
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numeric.split('.').filter(|p| !p.is_empty());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next().map(|p| p.parse().ok()).unwrap_or(Some(0))?;
    if major >= 10 {
        Some(major * 10000 + minor)
    } else {
        let patch: u32 = parts.next().map(|p| p.parse().ok()).unwrap_or(Some(0))?;
        Some(major * 10000 + minor * 100 + patch)
    }
}

/// A command shortened for messages.
fn short(sql: &str) -> String {
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 60 {
        format!("{}...", one_line.chars().take(60).collect::<String>())
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert_eq!(
            parse_server_version("15.18 (Debian 15.18-1.pgdg120+1)"),
            Some(150018)
        );
        assert_eq!(parse_server_version("16beta1"), Some(160000));
        assert_eq!(parse_server_version("18.4"), Some(180004));
        assert_eq!(parse_server_version("9.6.24"), Some(90624));
        assert_eq!(parse_server_version("10.5"), Some(100005));
        assert_eq!(parse_server_version("devel"), None);
    }

    /// The connection and its futures can move between tokio worker threads.
    #[allow(dead_code)]
    fn futures_are_send(conn: &mut ReplicationConnection, params: &ConnectParams) {
        fn send<T: Send>(_: &T) {}
        send(&ReplicationConnection::connect(params));
        send(&conn.identify_system());
        let opts = crate::pgwire::BaseBackupOptions::new("x");
        send(&conn.base_backup(&opts));
    }

    #[allow(dead_code)]
    async fn stream_next_is_send(stream: &mut crate::pgwire::BaseBackupStream<'_>) {
        fn send<T: Send>(_: &T) {}
        send(&stream.next());
        send(&stream);
    }
}
