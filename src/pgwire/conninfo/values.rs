//! Checking the values of connection settings: which options pitr accepts,
//! `sslmode`, ports, hosts (a socket directory or a host name) and
//! `connect_timeout`, each error naming where the value came from.

use std::path::PathBuf;
use std::time::Duration;

use super::Host;
use crate::error::{Error, Result};

/// Options pitr understands, options that change nothing for it, and the
/// rest, which are refused rather than silently ignored.
pub(super) fn check_option(key: &str, value: &str) -> Result<()> {
    match key {
        "host"
        | "hostaddr"
        | "port"
        | "user"
        | "password"
        | "dbname"
        | "application_name"
        | "fallback_application_name"
        | "connect_timeout"
        | "passfile"
        | "sslmode" => Ok(()),
        // Harmless for a physical replication connection.
        "keepalives"
        | "keepalives_idle"
        | "keepalives_interval"
        | "keepalives_count"
        | "tcp_user_timeout"
        | "client_encoding"
        | "sslcompression"
        | "replication"
        | "target_session_attrs"
        | "load_balance_hosts" => Ok(()),
        "gssencmode" if value != "require" => Ok(()),
        "channel_binding" if value != "require" => Ok(()),
        "gssencmode" | "channel_binding" => Err(Error::Config(format!(
            "{key}=require is not supported: pitr speaks neither GSSAPI encryption nor TLS \
             channel binding"
        ))),
        "sslcert"
        | "sslkey"
        | "sslrootcert"
        | "sslcrl"
        | "sslcrldir"
        | "sslpassword"
        | "sslsni"
        | "ssl_min_protocol_version"
        | "ssl_max_protocol_version"
        | "requirepeer"
        | "krbsrvname"
        | "gsslib"
        | "options"
        | "service" => Err(Error::Config(format!(
            "connection option \"{key}\" is not supported by pitr's replication client"
        ))),
        other => Err(Error::Config(format!(
            "invalid connection option \"{other}\" in the connection string"
        ))),
    }
}

pub(super) fn check_sslmode(mode: &str, src: &str) -> Result<()> {
    match mode {
        "disable" | "allow" | "prefer" => Ok(()),
        "require" | "verify-ca" | "verify-full" => Err(Error::Config(format!(
            "sslmode={mode} (from {src}): pitr does not support TLS connections yet; connect \
             over a Unix socket or a trusted network with sslmode=disable or prefer"
        ))),
        other => Err(Error::Config(format!(
            "invalid sslmode \"{other}\" (from {src}): use disable, allow, prefer, require, \
             verify-ca or verify-full"
        ))),
    }
}

pub(super) fn parse_port(p: &str, src: &str) -> Result<u16> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::Config(format!(
            "invalid port \"{p}\" (from {src}): expected a number from 1 to 65535"
        ))),
    }
}

pub(super) fn parse_host(h: &str, src: &str) -> Result<Host> {
    if h.contains(',') {
        return Err(Error::Config(format!(
            "several hosts \"{h}\" (from {src}) are not supported: name one host"
        )));
    }
    if h.starts_with('/') {
        Ok(Host::Unix(PathBuf::from(h)))
    } else {
        Ok(Host::Tcp(h.to_string()))
    }
}

pub(super) fn parse_timeout(t: &str, src: &str) -> Result<Duration> {
    let secs: i64 = t.trim().parse().map_err(|_| {
        Error::Config(format!(
            "invalid connect_timeout \"{t}\" (from {src}): expected whole seconds"
        ))
    })?;
    Ok(match secs {
        s if s <= 0 => Duration::ZERO,
        // libpq's minimum: one second is too easily cut short by rounding.
        1 => Duration::from_secs(2),
        s => Duration::from_secs(s as u64),
    })
}
