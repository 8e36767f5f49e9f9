//! The connection string itself: `key=value` pairs (libpq's quoting and
//! escapes) or a `postgresql://` URI (percent-decoded, with query
//! parameters), or a bare database name.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Parses a connection string into its settings: `key=value` pairs, a
/// `postgresql://` / `postgres://` URI, or (neither) a bare database name.
pub fn parse_conninfo(s: &str) -> Result<HashMap<String, String>> {
    if s.starts_with("postgresql://") || s.starts_with("postgres://") {
        parse_uri(s)
    } else if s.contains('=') {
        parse_key_values(s)
    } else {
        Ok(HashMap::from([("dbname".to_string(), s.to_string())]))
    }
}

fn bad_conninfo(s: &str, why: &str) -> Error {
    // Never repeat a string that may hold a password.
    let shown = if s.contains("password") || s.contains('@') {
        "the connection string"
    } else {
        s
    };
    Error::Config(format!("invalid connection string ({shown}): {why}"))
}

/// `key = value` pairs separated by white space; a value is either a run of
/// non-space characters or single-quoted, with `\` escaping the next
/// character in both forms.
fn parse_key_values(s: &str) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad_conninfo(s, &format!("missing \"=\" after \"{key}\"")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(bad_conninfo(
                            s,
                            &format!("unterminated quoted value for \"{key}\""),
                        ))
                    }
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => {
                            return Err(bad_conninfo(
                                s,
                                &format!("unterminated quoted value for \"{key}\""),
                            ))
                        }
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.insert(key, value);
    }
}

/// `postgresql://[user[:password]@][host][:port][/dbname][?key=value&...]`,
/// percent-encoded; `host` may be `[v6 address]`, or a percent-encoded
/// socket directory (`%2Fvar%2Frun%2Fpostgresql`).
fn parse_uri(s: &str) -> Result<HashMap<String, String>> {
    let rest = s
        .strip_prefix("postgresql://")
        .or_else(|| s.strip_prefix("postgres://"))
        .expect("checked by caller");
    let mut out = HashMap::new();

    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                out.insert("user".into(), percent_decode(s, user)?);
            }
            if let Some(p) = password {
                out.insert("password".into(), percent_decode(s, p)?);
            }
            hostport
        }
        None => authority,
    };
    if hostport.contains(',') {
        return Err(bad_conninfo(
            s,
            "several hosts are not supported: name one host",
        ));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| bad_conninfo(s, "missing \"]\" after an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad_conninfo(s, "unexpected text after an IPv6 address"))?,
            ),
        };
        (addr.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (percent_decode(s, h)?, Some(p)),
            None => (percent_decode(s, hostport)?, None),
        }
    };
    if !host.is_empty() {
        out.insert("host".into(), host);
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        out.insert("port".into(), percent_decode(s, p)?);
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        out.insert("dbname".into(), percent_decode(s, db)?);
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            bad_conninfo(s, &format!("missing \"=\" in URI parameter \"{pair}\""))
        })?;
        let k = percent_decode(s, k)?;
        let v = percent_decode(s, v)?;
        // libpq's URI alias: ssl=true means sslmode=require.
        if k == "ssl" {
            if v == "true" {
                out.insert("sslmode".into(), "require".into());
            }
            continue;
        }
        out.insert(k, v);
    }
    Ok(out)
}

fn percent_decode(whole: &str, s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad_conninfo(whole, "invalid percent-encoding"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad_conninfo(whole, "percent-encoding is not UTF-8"))
}
