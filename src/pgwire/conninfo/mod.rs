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

mod passfile;
mod string;
mod values;

use passfile::{os_user_name, passfile_lookup};
pub use string::parse_conninfo;
use values::{check_option, check_sslmode, parse_host, parse_port, parse_timeout};

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
