//! Repository settings: where the repository is, how to reach it, and how
//! objects are encoded. Built by the command layer from flags and the
//! environment; secrets are held in [`Secret`] so they never print.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::codec::Compression;
use crate::error::Error;

/// A credential. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// `s3://bucket[/prefix]`
    S3 { bucket: String, prefix: String },
    /// `file:///absolute/dir`
    Fs { root: PathBuf },
}

impl FromStr for RepoLocation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let hint = "use s3://bucket[/prefix] or file:///absolute/dir (--repo / PITR_REPO)";
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid_bucket {
                return Err(Error::Config(format!(
                    "repository '{s}' names bucket '{bucket}', which is not a valid S3 bucket name \
                     (3-63 characters: a-z, 0-9, '-', '.'); {hint}"
                )));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if prefix.split('/').any(|c| c == ".." || c == ".") {
                return Err(Error::Config(format!(
                    "repository '{s}' has '.' or '..' in its prefix; {hint}"
                )));
            }
            Ok(RepoLocation::S3 {
                bucket: bucket.to_string(),
                prefix,
            })
        } else if let Some(path) = s.strip_prefix("file://") {
            let root = PathBuf::from(path);
            if !root.is_absolute() {
                return Err(Error::Config(format!(
                    "repository '{s}' is not an absolute path: write file:///absolute/dir (three slashes)"
                )));
            }
            Ok(RepoLocation::Fs { root })
        } else {
            Err(Error::Config(format!(
                "repository '{s}' is not a repository URL: {hint}"
            )))
        }
    }
}

impl fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoLocation::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RepoLocation::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            RepoLocation::Fs { root } => write!(f, "file://{}", root.display()),
        }
    }
}

/// The repository URL that the keys of a CloudNativePG object-store Secret
/// name: `s3://$S3_BUCKET/$S3_PATH` (no prefix when S3_PATH is empty).
pub fn repository_of_secret(bucket: &str, path: Option<&str>) -> String {
    match path.unwrap_or("").trim_matches('/') {
        "" => format!("s3://{bucket}"),
        p => format!("s3://{bucket}/{p}"),
    }
}

/// Server-side encryption requested from the S3 store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    None,
    /// SSE-S3, `x-amz-server-side-encryption: AES256`.
    Aes256,
    /// SSE-KMS with an optional key id.
    Kms {
        key_id: Option<String>,
    },
}

impl Sse {
    pub fn parse(mode: &str, kms_key_id: Option<String>) -> Result<Sse, Error> {
        match mode {
            "none" | "" => Ok(Sse::None),
            "AES256" | "aes256" => Ok(Sse::Aes256),
            "aws:kms" => Ok(Sse::Kms { key_id: kms_key_id }),
            other => Err(Error::Config(format!(
                "unknown server-side encryption '{other}' (--sse / PITR_SSE): use none, AES256 or aws:kms"
            ))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Sse::None => "none",
            Sse::Aes256 => "AES256",
            Sse::Kms { .. } => "aws:kms",
        }
    }
}

/// Static credentials for S3.
#[derive(Debug, Clone)]
pub struct S3Credentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl S3Credentials {
    /// `S3_ACCESS_KEY_ID` / `S3_SECRET_ACCESS_KEY` (the names CloudNativePG
    /// users' secrets carry), else `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub fn from_env() -> Option<S3Credentials> {
        Self::from_lookup(&|n| std::env::var(n).ok())
    }

    /// As [`S3Credentials::from_env`], with the variables `lookup` gives.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Option<S3Credentials> {
        let var = |n: &str| lookup(n).filter(|v| !v.is_empty());
        let pair = |a: &str, s: &str| Some((var(a)?, var(s)?));
        let (id, secret) = pair("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY")
            .or_else(|| pair("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))?;
        Some(S3Credentials {
            access_key_id: Secret::new(id),
            secret_access_key: Secret::new(secret),
            session_token: var("S3_SESSION_TOKEN")
                .or_else(|| var("AWS_SESSION_TOKEN"))
                .map(Secret::new),
        })
    }
}

/// How to reach an S3 store.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub endpoint_url: Option<String>,
    pub region: String,
    pub ca_bundle: Option<PathBuf>,
    pub credentials: Option<S3Credentials>,
    pub sse: Sse,
    /// Path-style addressing (`https://host/bucket/key`), which Ceph RGW and
    /// MinIO need unless they are set up for virtual hosts.
    pub path_style: bool,
    /// Bytes per multipart upload part (objects up to this size go in one PUT).
    pub part_size: usize,
    /// Attempts the S3 client makes for one request (standard backoff).
    /// This is the one retry layer for store requests, except for
    /// wal-fetch, which retries whole fetches itself and sets this to 1.
    pub request_attempts: u32,
    /// Longest wait for a TCP (and TLS) connection to the store.
    pub connect_timeout: Duration,
    /// Longest wait for the store's answer to a request once it is sent,
    /// and longest a body transfer may make no progress (a stall).
    pub read_timeout: Duration,
    /// Longest one store request may take with all its attempts and the
    /// backoff between them (`None`: no limit but the attempts').
    pub request_time_limit: Option<Duration>,
}

/// Default connect timeout (`--s3-connect-timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default read timeout (`--s3-read-timeout`).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit for one request with its retries (`--s3-request-time-limit`).
pub const DEFAULT_REQUEST_TIME_LIMIT: Duration = Duration::from_secs(900);

/// S3 objects up to this size go in one PUT; larger ones in parts of this
/// size (grown for very large objects, see `PutOptions::size_hint`). Two
/// parts travel while a third fills, so this bounds a backup's memory.
pub const DEFAULT_PART_SIZE: usize = 16 << 20;

/// Attempts per store request unless a command says otherwise.
pub const DEFAULT_REQUEST_ATTEMPTS: u32 = 3;

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint_url: None,
            region: "us-east-1".into(),
            ca_bundle: None,
            credentials: None,
            sse: Sse::None,
            path_style: true,
            part_size: DEFAULT_PART_SIZE,
            request_attempts: DEFAULT_REQUEST_ATTEMPTS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            request_time_limit: Some(DEFAULT_REQUEST_TIME_LIMIT),
        }
    }
}

/// Everything needed to open a repository.
#[derive(Debug, Clone)]
pub struct RepoConfig {
    pub location: RepoLocation,
    pub server_name: String,
    pub s3: S3Settings,
    pub compression: Compression,
    pub encryption_key_file: Option<PathBuf>,
}

impl RepoConfig {
    pub fn validate_server_name(name: &str) -> Result<(), Error> {
        let ok = !name.is_empty()
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "server name '{name}' (--server-name / PITR_SERVER_NAME) must be letters, digits, \
                 '.', '_' or '-', like Barman's server names"
            )))
        }
    }

    /// The secret strings in this configuration, for scrubbing messages.
    pub fn secrets(&self) -> Vec<String> {
        self.s3
            .credentials
            .iter()
            .flat_map(|c| {
                [
                    Some(&c.access_key_id),
                    Some(&c.secret_access_key),
                    c.session_token.as_ref(),
                ]
                .into_iter()
                .flatten()
                .map(|s| s.expose().to_string())
            })
            .filter(|s| s.len() >= 4)
            .collect()
    }
}

/// Whether `url` carries a user name or password (`scheme://user:pw@host`).
/// S3 never uses them (requests are signed with the keys), and an endpoint
/// is shown in messages and written into restore_command, so pitr refuses
/// such an endpoint rather than echo the password.
pub fn url_has_credentials(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.contains('@')
}

/// Replaces every secret in `text` with `***`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(text.to_string(), |acc, s| acc.replace(s.as_str(), "***"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_credentials_in_urls() {
        for url in ["https://u:p@rgw:7443", "http://user@host/x", "u:p@host"] {
            assert!(url_has_credentials(url), "{url}");
        }
        for url in [
            "https://rgw.example:7443",
            "http://h/a@b",
            "https://h?x=a@b",
            "h:9000",
        ] {
            assert!(!url_has_credentials(url), "{url}");
        }
    }

    #[test]
    fn parses_repository_urls() {
        assert_eq!(
            "s3://backups/pg/prod/".parse::<RepoLocation>().unwrap(),
            RepoLocation::S3 {
                bucket: "backups".into(),
                prefix: "pg/prod".into()
            }
        );
        assert_eq!(
            "s3://backups".parse::<RepoLocation>().unwrap(),
            RepoLocation::S3 {
                bucket: "backups".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            "file:///var/lib/pitr".parse::<RepoLocation>().unwrap(),
            RepoLocation::Fs {
                root: "/var/lib/pitr".into()
            }
        );
        for bad in ["s3://B", "file://relative", "/tmp/x", "s3://ok-bucket/../x"] {
            let e = bad.parse::<RepoLocation>().unwrap_err().to_string();
            assert!(e.contains(bad.trim_end_matches("/../x")), "{e}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("AKIASECRET");
        assert!(!format!("{s:?}").contains("AKIA"));
        assert_eq!(
            redact("key AKIASECRET here", &["AKIASECRET".into()]),
            "key *** here"
        );
    }

    #[test]
    fn server_names() {
        assert!(RepoConfig::validate_server_name("pg-main_1.a").is_ok());
        assert!(RepoConfig::validate_server_name("a/b").is_err());
        assert!(RepoConfig::validate_server_name("").is_err());
    }
}
