//! Startup and authentication.
//!
//! Sequence: we send a StartupMessage (protocol 3.0) with our parameters;
//! the server answers with Authentication requests until AuthenticationOk
//! (trust: at once; `password`: cleartext; `md5`: an MD5 of the password and
//! user with a 4-byte salt; `scram-sha-256`: SASL in three steps), then
//! BackendKeyData and ParameterStatus messages, then ReadyForQuery. An
//! ErrorResponse at any point ends it (wrong password, no pg_hba.conf entry,
//! no REPLICATION attribute, too many connections).
//!
//! No TLS and no GSSAPI: pitr never sends SSLRequest, so a server whose
//! pg_hba.conf only has `hostssl` lines for us refuses with "no pg_hba.conf
//! entry ... no encryption"; the error then says which line would do.

use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::conninfo::ConnectParams;
use super::framing::{describe_fields, error_code, unexpected, Framed};
use crate::error::{Error, Result};

/// Sends the startup message with `params` plus `extra` parameters, and
/// authenticates. Returns once the server is ready for queries.
pub(crate) async fn startup(
    conn: &mut Framed,
    params: &ConnectParams,
    extra: &[(&str, &str)],
) -> Result<()> {
    let mut startup: Vec<(&str, &str)> = vec![
        ("user", params.user.as_str()),
        ("application_name", params.application_name.as_str()),
        ("client_encoding", "UTF8"),
    ];
    if let Some(db) = &params.dbname {
        startup.push(("database", db.as_str()));
    }
    startup.extend_from_slice(extra);
    frontend::startup_message(startup.iter().copied(), &mut conn.write_buf)
        .map_err(|e| Error::Config(format!("invalid connection parameter: {e}")))?;
    conn.flush().await?;

    authenticate(conn, params).await?;

    loop {
        match conn.recv("starting the session").await? {
            Message::BackendKeyData(_) => {}
            Message::ReadyForQuery(_) => return Ok(()),
            Message::ErrorResponse(body) => {
                return Err(login_error(conn, params, &body));
            }
            other => {
                return Err(unexpected(&conn.target, "starting the session", &other));
            }
        }
    }
}

async fn authenticate(conn: &mut Framed, params: &ConnectParams) -> Result<()> {
    const DOING: &str = "authenticating";
    loop {
        match conn.recv(DOING).await? {
            Message::AuthenticationOk => return Ok(()),
            Message::AuthenticationCleartextPassword => {
                let pw = password(conn, params, "a password")?;
                frontend::password_message(pw.as_bytes(), &mut conn.write_buf)
                    .map_err(|e| Error::Config(format!("invalid password: {e}")))?;
                conn.flush().await?;
            }
            Message::AuthenticationMd5Password(body) => {
                let pw = password(conn, params, "an MD5 password")?;
                let hash = md5_hash(params.user.as_bytes(), pw.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut conn.write_buf)
                    .map_err(|e| Error::Config(format!("invalid password: {e}")))?;
                conn.flush().await?;
            }
            Message::AuthenticationSasl(body) => {
                let mut mechanisms = Vec::new();
                let mut it = body.mechanisms();
                while let Ok(Some(m)) = it.next() {
                    mechanisms.push(m.to_string());
                }
                if !mechanisms.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                    return Err(Error::Postgres(format!(
                        "the PostgreSQL server at {} offers only SASL mechanisms {} for user \
                         \"{}\"; pitr supports SCRAM-SHA-256 without TLS channel binding",
                        conn.target,
                        mechanisms.join(", "),
                        params.user
                    )));
                }
                let pw = password(conn, params, "a SCRAM-SHA-256 password")?;
                scram(conn, params, pw.as_bytes()).await?;
            }
            Message::AuthenticationGss
            | Message::AuthenticationGssContinue(_)
            | Message::AuthenticationSspi
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential => {
                return Err(Error::Postgres(format!(
                    "the PostgreSQL server at {} asks user \"{}\" for GSSAPI/SSPI/Kerberos \
                     authentication, which pitr does not support: use scram-sha-256, md5, \
                     password, peer or trust for this connection in pg_hba.conf",
                    conn.target, params.user
                )));
            }
            Message::ErrorResponse(body) => return Err(login_error(conn, params, &body)),
            other => return Err(unexpected(&conn.target, DOING, &other)),
        }
    }
}

/// SCRAM-SHA-256 (RFC 7677) without channel binding: client-first,
/// server-first, client-final, server-final (which proves the server knows
/// the password too).
async fn scram(conn: &mut Framed, params: &ConnectParams, password: &[u8]) -> Result<()> {
    const DOING: &str = "authenticating with SCRAM-SHA-256";
    let mut scram = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut conn.write_buf)
        .map_err(|e| Error::Postgres(format!("SCRAM: {e}")))?;
    conn.flush().await?;

    let server_first = match conn.recv(DOING).await? {
        Message::AuthenticationSaslContinue(body) => body,
        Message::ErrorResponse(body) => return Err(login_error(conn, params, &body)),
        other => return Err(unexpected(&conn.target, DOING, &other)),
    };
    scram.update(server_first.data()).map_err(|e| {
        Error::Postgres(format!(
            "the PostgreSQL server at {} sent an invalid SCRAM message: {e}",
            conn.target
        ))
    })?;
    frontend::sasl_response(scram.message(), &mut conn.write_buf)
        .map_err(|e| Error::Postgres(format!("SCRAM: {e}")))?;
    conn.flush().await?;

    let server_final = match conn.recv(DOING).await? {
        Message::AuthenticationSaslFinal(body) => body,
        Message::ErrorResponse(body) => return Err(login_error(conn, params, &body)),
        other => return Err(unexpected(&conn.target, DOING, &other)),
    };
    scram.finish(server_final.data()).map_err(|e| {
        Error::Postgres(format!(
            "the PostgreSQL server at {} failed SCRAM server verification ({e}): it does not \
             know the password it accepted; refusing the connection",
            conn.target
        ))
    })
}

fn password<'a>(conn: &Framed, params: &'a ConnectParams, what: &str) -> Result<&'a str> {
    params.password.as_ref().map(|p| p.expose()).ok_or_else(|| {
        Error::Config(format!(
            "the PostgreSQL server at {} asks user \"{}\" for {what}, but none was given: set \
             PGPASSWORD, add password= to the connection string, or add a line to the password \
             file (PGPASSFILE or ~/.pgpass)",
            conn.target, params.user
        ))
    })
}

/// A login failure with the server's words and, for the usual causes, what
/// to do about them.
fn login_error(
    conn: &Framed,
    params: &ConnectParams,
    body: &postgres_protocol::message::backend::ErrorResponseBody,
) -> Error {
    let text = describe_fields(&mut body.fields());
    let code = error_code(body).unwrap_or_default();
    let user = &params.user;
    let advice = if code == "28P01" {
        Some(format!(
            "check the password for user \"{user}\" (PGPASSWORD, password= in the connection \
             string, or the password file)"
        ))
    } else if text.contains("no pg_hba.conf entry") {
        Some(format!(
            "pg_hba.conf needs a line for physical replication, whose database field is the \
             keyword `replication`, e.g. `host replication {user} <client address>/32 \
             scram-sha-256`, then a reload; pitr does not use TLS, so `hostssl` lines never \
             match it"
        ))
    } else if text.contains("superuser or replication role")
        || text.contains("permission denied to start WAL sender")
    {
        Some(format!(
            "give the role the REPLICATION attribute: ALTER ROLE \"{user}\" REPLICATION"
        ))
    } else {
        None
    };
    let mut msg = format!(
        "PostgreSQL server at {} refused the connection for user \"{user}\": {text}",
        conn.target
    );
    if let Some(a) = advice {
        msg.push_str(" -- ");
        msg.push_str(&a);
    }
    Error::Postgres(msg)
}
