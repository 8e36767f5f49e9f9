//! Connection settings, resolved the way PostgreSQL's own tools do: a
//! `--dbname` style connection string (`key=value` pairs or a
//! `postgresql://` URI), over the libpq environment (`PGHOST`, `PGPORT`,
//! `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`,
//! `PGPASSFILE`, `PGSSLMODE`), over the defaults (Unix socket directory
//! `/var/run/postgresql`, port 5432, the operating-system user name).
//!
//! A password not given anywhere else is looked up in the password file
//! (`PGPASSFILE`, else `~/.pgpass`) as libpq does, with the database field
//! matched against `replication` when no database is named (as
//! pg_basebackup does).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Secret;
use crate::error::{Error, Result};

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address, reached over TCP.
    Tcp(String),
    /// A directory holding the server's Unix socket `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(h) => f.write_str(h),
            Host::Unix(d) => write!(f, "{}", d.display()),
        }
    }
}

/// Everything needed to open a connection. `Debug` never shows the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectParams {
    pub host: Host,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub dbname: Option<String>,
    pub application_name: String,
    /// Limit on reaching the server and authenticating; zero means no limit
    /// (`connect_timeout=0`, as in libpq).
    pub connect_timeout: Duration,
}

/// Socket directory of Debian's and most distributions' PostgreSQL builds.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";
pub const DEFAULT_PORT: u16 = 5432;
pub const DEFAULT_APPLICATION_NAME: &str = "pitr";
/// libpq waits forever by default; a backup tool should not.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl ConnectParams {
    /// Resolves a connection string (or a bare database name) over the
    /// process environment and the defaults.
    pub fn resolve(conninfo: Option<&str>) -> Result<ConnectParams> {
        ConnectParams::resolve_with(conninfo, |k| std::env::var(k).ok())
    }

    /// As [`ConnectParams::resolve`], reading the environment through `env`
    /// (which tests use to stay clear of the process environment).
    pub fn resolve_with(
        conninfo: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ConnectParams> {
        let given = match conninfo {
            Some(s) => parse_conninfo(s)?,
            None => HashMap::new(),
        };
        // A setting from the connection string wins over the environment;
        // empty values count as unset, as in libpq.
        let get = |key: &str, var: &str| -> Option<(String, String)> {
            if let Some(v) = given.get(key).filter(|v| !v.is_empty()) {
                return Some((v.clone(), format!("{key}= in the connection string")));
            }
            env(var)
                .filter(|v| !v.is_empty())
                .map(|v| (v, format!("environment variable {var}")))
        };

        for (key, value) in &given {
            check_option(key, value)?;
        }
        if let Some((mode, src)) = get("sslmode", "PGSSLMODE") {
            check_sslmode(&mode, &src)?;
        }

        let port = match get("port", "PGPORT") {
            Some((p, src)) => parse_port(&p, &src)?,
            None => DEFAULT_PORT,
        };
        let host = match get("hostaddr", "PGHOSTADDR").or_else(|| get("host", "PGHOST")) {
            Some((h, src)) => parse_host(&h, &src)?,
            None => Host::Unix(PathBuf::from(DEFAULT_SOCKET_DIR)),
        };
        let user = match get("user", "PGUSER") {
            Some((u, _)) => u,
            None => os_user_name(&env).ok_or_else(|| {
                Error::Config(
                    "cannot tell which PostgreSQL user to connect as: set user= in the \
                     connection string or PGUSER"
                        .into(),
                )
            })?,
        };
        let dbname = get("dbname", "PGDATABASE").map(|(d, _)| d);
        let application_name = get("application_name", "PGAPPNAME")
            .map(|(a, _)| a)
            .or_else(|| given.get("fallback_application_name").cloned())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| DEFAULT_APPLICATION_NAME.to_string());
        let connect_timeout = match get("connect_timeout", "PGCONNECT_TIMEOUT") {
            Some((t, src)) => parse_timeout(&t, &src)?,
            None => DEFAULT_CONNECT_TIMEOUT,
        };

        let mut password = get("password", "PGPASSWORD").map(|(p, _)| Secret::new(p));
        if password.is_none() {
            let file = get("passfile", "PGPASSFILE")
                .map(|(f, _)| PathBuf::from(f))
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
            if let Some(file) = file {
                password = passfile_lookup(&file, &host, port, dbname.as_deref(), &user);
            }
        }

        Ok(ConnectParams {
            host,
            port,
            user,
            password,
            dbname,
            application_name,
            connect_timeout,
        })
    }

    /// The socket file, for a Unix-socket host.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match &self.host {
            Host::Unix(dir) => Some(dir.join(format!(".s.PGSQL.{}", self.port))),
            Host::Tcp(_) => None,
        }
    }

    /// Sets the host as `--host` / PGHOST do: a value starting with `/` is
    /// a Unix socket directory, anything else a host name or address.
    pub fn set_host(&mut self, host: &str) {
        self.host = if host.starts_with('/') {
            Host::Unix(PathBuf::from(host))
        } else {
            Host::Tcp(host.to_string())
        };
    }

    /// Where the server is, for messages: `socket "/dir/.s.PGSQL.5432"` or
    /// `host "db1" port 5432`.
    pub fn describe(&self) -> String {
        match &self.host {
            Host::Unix(_) => format!(
                "socket \"{}\"",
                self.socket_path().expect("unix host").display()
            ),
            Host::Tcp(h) => format!("host \"{h}\" port {}", self.port),
        }
    }
}

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

/// Options pitr understands, options that change nothing for it, and the
/// rest, which are refused rather than silently ignored.
fn check_option(key: &str, value: &str) -> Result<()> {
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

fn check_sslmode(mode: &str, src: &str) -> Result<()> {
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

fn parse_port(p: &str, src: &str) -> Result<u16> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::Config(format!(
            "invalid port \"{p}\" (from {src}): expected a number from 1 to 65535"
        ))),
    }
}

fn parse_host(h: &str, src: &str) -> Result<Host> {
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

fn parse_timeout(t: &str, src: &str) -> Result<Duration> {
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

/// The operating-system user name (as libpq: the password database entry of
/// the effective user), else `$USER` / `$LOGNAME`.
fn os_user_name(env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok().map(|m| m.uid());
    let from_passwd = uid.and_then(|uid| {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?;
            let _pw = f.next()?;
            (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_string())
        })
    });
    from_passwd
        .or_else(|| env("USER"))
        .or_else(|| env("LOGNAME"))
        .filter(|u| !u.is_empty())
}

/// Looks the password up in a libpq password file
/// (`hostname:port:database:username:password`, `*` matches anything, `\`
/// escapes `:` and `\`). Unix sockets match `localhost`, as in libpq; a
/// physical replication connection without a database matches
/// `replication`. A file readable by group or others is ignored, as libpq
/// does.
fn passfile_lookup(
    file: &Path,
    host: &Host,
    port: u16,
    dbname: Option<&str>,
    user: &str,
) -> Option<Secret> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file \"{}\" has group or world access; permissions should be u=rw (0600) \
             or less: ignoring it",
            file.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = match host {
        Host::Tcp(h) => h.as_str(),
        Host::Unix(_) => "localhost",
    };
    let port = port.to_string();
    let want = [host, port.as_str(), dbname.unwrap_or("replication"), user];
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .find_map(|line| {
            let fields = split_passfile_line(line);
            if fields.len() < 5 {
                return None;
            }
            let matches = want.iter().zip(&fields).all(|(w, f)| f == "*" || f == w);
            matches.then(|| Secret::new(fields[4..].join(":")))
        })
}

fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("non-empty").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("non-empty").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn resolve(conninfo: Option<&str>, vars: &[(&str, &str)]) -> Result<ConnectParams> {
        let mut all = vec![("USER", "fallback-user"), ("HOME", "/nonexistent")];
        all.extend_from_slice(vars);
        ConnectParams::resolve_with(conninfo, env_of(&all))
    }

    #[test]
    fn key_value_form_with_quoting() {
        let p = resolve(
            Some(
                "host=/var/run/postgresql port = 5433 user=x password='it''s \\'q\\' \\\\ x' \
                 dbname=z application_name=my\\ app",
            ),
            &[],
        );
        // '' is not an escape in conninfo: the value ends at the second quote.
        assert!(p.is_err(), "{p:?}");

        let p = resolve(
            Some(
                "host=/var/run/postgresql port = 5433 user=x password='it\\'s a \\\\ secret' \
                 dbname=z application_name=my\\ app",
            ),
            &[],
        )
        .unwrap();
        assert_eq!(p.host, Host::Unix("/var/run/postgresql".into()));
        assert_eq!(p.port, 5433);
        assert_eq!(p.user, "x");
        assert_eq!(p.password.as_ref().unwrap().expose(), "it's a \\ secret");
        assert_eq!(p.dbname.as_deref(), Some("z"));
        assert_eq!(p.application_name, "my app");
        assert_eq!(
            p.socket_path().unwrap(),
            PathBuf::from("/var/run/postgresql/.s.PGSQL.5433")
        );
    }

    #[test]
    fn empty_quoted_value_and_missing_equals() {
        let m = parse_conninfo("password='' user=u").unwrap();
        assert_eq!(m["password"], "");
        assert_eq!(m["user"], "u");
        let e = parse_conninfo("host=x port").unwrap_err().to_string();
        assert!(e.contains("missing \"=\" after \"port\""), "{e}");
        let e = parse_conninfo("host='x").unwrap_err().to_string();
        assert!(e.contains("unterminated"), "{e}");
    }

    #[test]
    fn uri_form() {
        let p = resolve(
            Some("postgresql://rep%40l:p%3Ass@db.example.com:6543/mydb?application_name=bk&connect_timeout=7"),
            &[],
        )
        .unwrap();
        assert_eq!(p.host, Host::Tcp("db.example.com".into()));
        assert_eq!(p.port, 6543);
        assert_eq!(p.user, "rep@l");
        assert_eq!(p.password.as_ref().unwrap().expose(), "p:ss");
        assert_eq!(p.dbname.as_deref(), Some("mydb"));
        assert_eq!(p.application_name, "bk");
        assert_eq!(p.connect_timeout, Duration::from_secs(7));
        assert_eq!(p.describe(), "host \"db.example.com\" port 6543");
    }

    #[test]
    fn uri_ipv6_socket_dir_and_query_host() {
        let p = resolve(Some("postgres://[::1]:5439"), &[]).unwrap();
        assert_eq!(p.host, Host::Tcp("::1".into()));
        assert_eq!(p.port, 5439);
        assert_eq!(p.dbname, None);

        let p = resolve(Some("postgresql://%2Ftmp%2Fpg/db"), &[]).unwrap();
        assert_eq!(p.host, Host::Unix("/tmp/pg".into()));
        assert_eq!(p.port, 5432);

        let p = resolve(Some("postgresql:///db?host=/run/pg&port=5444&user=u"), &[]).unwrap();
        assert_eq!(p.host, Host::Unix("/run/pg".into()));
        assert_eq!(p.port, 5444);
        assert_eq!(p.user, "u");
        assert_eq!(p.dbname.as_deref(), Some("db"));

        let e = resolve(Some("postgresql://a,b/db"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("several hosts"), "{e}");
        let e = resolve(Some("postgresql://h/db?sslmode=verify-full"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not support TLS"), "{e}");
    }

    #[test]
    fn environment_then_defaults() {
        let p = resolve(None, &[]).unwrap();
        assert_eq!(p.host, Host::Unix(DEFAULT_SOCKET_DIR.into()));
        assert_eq!(p.port, 5432);
        assert!(!p.user.is_empty());
        assert_eq!(p.password, None);
        assert_eq!(p.dbname, None);
        assert_eq!(p.application_name, "pitr");
        assert_eq!(p.connect_timeout, DEFAULT_CONNECT_TIMEOUT);

        let env = [
            ("PGHOST", "10.0.0.5"),
            ("PGPORT", "6000"),
            ("PGUSER", "envuser"),
            ("PGPASSWORD", "envpw"),
            ("PGDATABASE", "envdb"),
            ("PGAPPNAME", "envapp"),
            ("PGCONNECT_TIMEOUT", "0"),
        ];
        let p = resolve(None, &env).unwrap();
        assert_eq!(p.host, Host::Tcp("10.0.0.5".into()));
        assert_eq!(p.port, 6000);
        assert_eq!(p.user, "envuser");
        assert_eq!(p.password.as_ref().unwrap().expose(), "envpw");
        assert_eq!(p.dbname.as_deref(), Some("envdb"));
        assert_eq!(p.application_name, "envapp");
        assert_eq!(p.connect_timeout, Duration::ZERO);

        // The connection string wins over the environment, key by key.
        let p = resolve(Some("host=/sock user=cli connect_timeout=1"), &env).unwrap();
        assert_eq!(p.host, Host::Unix("/sock".into()));
        assert_eq!(p.port, 6000);
        assert_eq!(p.user, "cli");
        assert_eq!(p.password.as_ref().unwrap().expose(), "envpw");
        assert_eq!(p.connect_timeout, Duration::from_secs(2));
    }

    #[test]
    fn bare_database_name() {
        let p = resolve(Some("postgres"), &[("PGHOST", "/s")]).unwrap();
        assert_eq!(p.dbname.as_deref(), Some("postgres"));
        assert_eq!(p.host, Host::Unix("/s".into()));
    }

    #[test]
    fn bad_values_are_named() {
        let e = resolve(Some("port=0"), &[]).unwrap_err().to_string();
        assert!(
            e.contains("invalid port \"0\"") && e.contains("connection string"),
            "{e}"
        );
        let e = resolve(None, &[("PGPORT", "x")]).unwrap_err().to_string();
        assert!(e.contains("PGPORT"), "{e}");
        let e = resolve(Some("bogus=1"), &[]).unwrap_err().to_string();
        assert!(e.contains("invalid connection option \"bogus\""), "{e}");
        let e = resolve(Some("connect_timeout=soon"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("connect_timeout"), "{e}");
        let e = resolve(None, &[("PGSSLMODE", "require")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("PGSSLMODE"), "{e}");
        assert!(resolve(Some("sslmode=prefer keepalives=1"), &[]).is_ok());
    }

    #[test]
    fn error_messages_and_debug_never_show_the_password() {
        let e = resolve(Some("password=hunter2 port=x"), &[])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse_conninfo("postgresql://u:hunter2@h/db?x")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let p = resolve(Some("password=hunter2"), &[]).unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn password_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\n\
             other:5432:*:u:wrong\n\
             localhost:5432:replication:u:sock\\:pw\n\
             db1:*:*:u:tcp:pw\n\
             *:*:named:*:any\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pf = file.to_str().unwrap();
        let pw = |conninfo: &str| {
            resolve(Some(conninfo), &[("PGPASSFILE", pf)])
                .unwrap()
                .password
                .map(|s| s.expose().to_string())
        };
        assert_eq!(pw("host=/run/pg user=u").as_deref(), Some("sock:pw"));
        assert_eq!(pw("host=db1 port=9 user=u").as_deref(), Some("tcp:pw"));
        assert_eq!(pw("host=db2 user=v dbname=named").as_deref(), Some("any"));
        assert_eq!(pw("host=db2 user=v"), None);
        // An explicit password wins over the file.
        assert_eq!(
            pw("host=db1 user=u password=given").as_deref(),
            Some("given")
        );
        // A file others can read is ignored, as libpq does.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(pw("host=db1 user=u"), None);
    }
}
