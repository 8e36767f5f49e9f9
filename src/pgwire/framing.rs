//! The byte stream and the message framing of the PostgreSQL protocol (v3).
//!
//! [`Framed`] reads backend messages out of one reusable buffer and writes
//! frontend messages from another. Messages that may arrive at any time are
//! dealt with here, so callers never see them: NoticeResponse (logged with
//! the server's text) and ParameterStatus (kept, e.g. `server_version`).
//! ErrorResponse is handed to the caller, which knows what it was doing;
//! [`server_error`] turns it into an [`Error::Postgres`].

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::conninfo::{ConnectParams, Host};
use crate::error::{Error, Result};

/// A connected socket: TCP or Unix.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl Stream {
    /// Opens the socket named by `params`: the Unix socket file in a socket
    /// directory, or a TCP connection (every address the name resolves to,
    /// in turn).
    pub(crate) async fn connect(params: &ConnectParams) -> Result<Stream> {
        let target = params.describe();
        match &params.host {
            Host::Unix(_) => {
                let path = params.socket_path().expect("unix host");
                UnixStream::connect(&path)
                    .await
                    .map(Stream::Unix)
                    .map_err(|e| {
                        Error::Postgres(format!(
                            "cannot connect to PostgreSQL at {target}: {e} (is the server running \
                         locally and accepting connections on that socket? set host= or PGHOST \
                         to its socket directory, or to a host name for TCP)"
                        ))
                    })
            }
            Host::Tcp(host) => {
                let s = TcpStream::connect((host.as_str(), params.port))
                    .await
                    .map_err(|e| {
                        Error::Postgres(format!(
                            "cannot connect to PostgreSQL at {target}: {e} (is the server \
                             running on that host and accepting TCP connections on that port? \
                             see listen_addresses)"
                        ))
                    })?;
                // Small protocol messages (startup, authentication, queries)
                // must not wait for Nagle's algorithm.
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
        }
    }
}

/// Reads are made at least this large: a BASE_BACKUP CopyData message is
/// 32 KiB (PostgreSQL's sink buffer), so one read usually brings several.
const READ_CHUNK: usize = 256 * 1024;

/// A message stream over one connection.
pub(crate) struct Framed {
    stream: Stream,
    /// Incoming bytes. Parsed messages are split off the front and frozen,
    /// so CopyData payloads are handed out as slices of this buffer without
    /// a copy; once every slice is dropped, `reserve` reuses the allocation.
    read_buf: BytesMut,
    /// Outgoing messages, written out by [`Framed::flush`].
    pub(crate) write_buf: BytesMut,
    /// ParameterStatus values reported by the server.
    parameters: HashMap<String, String>,
    /// Where we are connected, for messages: `socket "..."` / `host "h" port p`.
    pub(crate) target: String,
}

impl Framed {
    pub(crate) fn new(stream: Stream, target: String) -> Framed {
        Framed {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::with_capacity(1024),
            parameters: HashMap::new(),
            target,
        }
    }

    /// A parameter the server reported (`server_version`, `integer_datetimes`, ...).
    pub(crate) fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// Sends what is in the write buffer.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        let res = self.stream.write_all(&self.write_buf).await;
        self.write_buf.clear();
        res.map_err(|e| {
            Error::Postgres(format!(
                "cannot send to the PostgreSQL server at {}: {e}",
                self.target
            ))
        })?;
        self.stream.flush().await.map_err(|e| {
            Error::Postgres(format!(
                "cannot send to the PostgreSQL server at {}: {e}",
                self.target
            ))
        })
    }

    /// The next message other than NoticeResponse and ParameterStatus.
    /// `doing` names the operation for the message if the connection drops.
    pub(crate) async fn recv(&mut self, doing: &str) -> Result<Message> {
        loop {
            let msg = self.recv_raw(doing).await?;
            match msg {
                Message::NoticeResponse(body) => {
                    let text = describe_fields(&mut body.fields());
                    tracing::warn!(server = %self.target, "PostgreSQL: {text}");
                }
                Message::ParameterStatus(body) => {
                    if let (Ok(name), Ok(value)) = (body.name(), body.value()) {
                        self.parameters.insert(name.to_string(), value.to_string());
                    }
                }
                other => {
                    tracing::trace!(message = message_name(&other), "received");
                    return Ok(other);
                }
            }
        }
    }

    async fn recv_raw(&mut self, doing: &str) -> Result<Message> {
        loop {
            match Message::parse(&mut self.read_buf) {
                Ok(Some(msg)) => return Ok(msg),
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::Postgres(format!(
                        "the PostgreSQL server at {} sent a malformed message while {doing}: {e}",
                        self.target
                    )))
                }
            }
            if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
                self.read_buf.reserve(READ_CHUNK);
            }
            let n = self
                .stream
                .read_buf(&mut self.read_buf)
                .await
                .map_err(|e| {
                    Error::Postgres(format!(
                        "lost the connection to the PostgreSQL server at {} while {doing}: {e}",
                        self.target
                    ))
                })?;
            if n == 0 {
                return Err(Error::Postgres(format!(
                    "the PostgreSQL server at {} closed the connection unexpectedly while \
                     {doing} (the server may have been stopped or crashed, or the session was \
                     terminated; see the server log)",
                    self.target
                )));
            }
        }
    }
}

/// Fields of an ErrorResponse or NoticeResponse, in a readable line:
/// `ERROR (SQLSTATE 28P01): message (detail: ...; hint: ...)`.
pub(crate) fn describe_fields<'a>(
    fields: &mut impl FallibleIterator<
        Item = postgres_protocol::message::backend::ErrorField<'a>,
        Error = io::Error,
    >,
) -> String {
    let mut severity = None;
    let mut localized_severity = None;
    let mut code = None;
    let mut message = None;
    let mut detail = None;
    let mut hint = None;
    while let Ok(Some(f)) = fields.next() {
        let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'V' => severity = Some(value),
            b'S' => localized_severity = Some(value),
            b'C' => code = Some(value),
            b'M' => message = Some(value),
            b'D' => detail = Some(value),
            b'H' => hint = Some(value),
            _ => {}
        }
    }
    let mut out = severity
        .or(localized_severity)
        .unwrap_or_else(|| "ERROR".into());
    if let Some(code) = code {
        out.push_str(&format!(" (SQLSTATE {code})"));
    }
    out.push_str(": ");
    out.push_str(message.as_deref().unwrap_or("(no message)"));
    let extra: Vec<String> = [("detail", detail), ("hint", hint)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}: {v}")))
        .collect();
    if !extra.is_empty() {
        out.push_str(&format!(" ({})", extra.join("; ")));
    }
    out
}

/// The SQLSTATE code of an ErrorResponse.
pub(crate) fn error_code(body: &ErrorResponseBody) -> Option<String> {
    let mut fields = body.fields();
    while let Ok(Some(f)) = fields.next() {
        if f.type_() == b'C' {
            return Some(String::from_utf8_lossy(f.value_bytes()).into_owned());
        }
    }
    None
}

/// An ErrorResponse as a library error: what we were doing, where, and the
/// server's own words.
pub(crate) fn server_error(target: &str, doing: &str, body: &ErrorResponseBody) -> Error {
    Error::Postgres(format!(
        "PostgreSQL server at {target} failed while {doing}: {}",
        describe_fields(&mut body.fields())
    ))
}

/// A message that has no place where it arrived.
pub(crate) fn unexpected(target: &str, doing: &str, msg: &Message) -> Error {
    Error::Postgres(format!(
        "the PostgreSQL server at {target} sent an unexpected {} message while {doing}",
        message_name(msg)
    ))
}

pub(crate) fn message_name(msg: &Message) -> &'static str {
    match msg {
        Message::AuthenticationOk
        | Message::AuthenticationCleartextPassword
        | Message::AuthenticationMd5Password(_)
        | Message::AuthenticationSasl(_)
        | Message::AuthenticationSaslContinue(_)
        | Message::AuthenticationSaslFinal(_)
        | Message::AuthenticationGss
        | Message::AuthenticationGssContinue(_)
        | Message::AuthenticationSspi
        | Message::AuthenticationKerberosV5
        | Message::AuthenticationScmCredential => "Authentication",
        Message::BackendKeyData(_) => "BackendKeyData",
        Message::BindComplete => "BindComplete",
        Message::CloseComplete => "CloseComplete",
        Message::CommandComplete(_) => "CommandComplete",
        Message::CopyData(_) => "CopyData",
        Message::CopyDone => "CopyDone",
        Message::CopyInResponse(_) => "CopyInResponse",
        Message::CopyOutResponse(_) => "CopyOutResponse",
        Message::DataRow(_) => "DataRow",
        Message::EmptyQueryResponse => "EmptyQueryResponse",
        Message::ErrorResponse(_) => "ErrorResponse",
        Message::NoData => "NoData",
        Message::NoticeResponse(_) => "NoticeResponse",
        Message::NotificationResponse(_) => "NotificationResponse",
        Message::ParameterDescription(_) => "ParameterDescription",
        Message::ParameterStatus(_) => "ParameterStatus",
        Message::ParseComplete => "ParseComplete",
        Message::PortalSuspended => "PortalSuspended",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        Message::RowDescription(_) => "RowDescription",
        _ => "unknown",
    }
}
