//! Repository flags shared by every command, each with its environment
//! variable. Credentials are read from the environment only: never flags,
//! which would show in process titles.

use std::path::PathBuf;

use clap::Args;

use pitr::codec::Compression;
use pitr::config::{repository_of_secret, RepoConfig, S3Credentials, S3Settings, Sse};
use pitr::error::{Error, Result};

#[derive(Debug, Args)]
pub struct RepoArgs {
    /// Repository: s3://bucket[/prefix] or file:///absolute/dir (required)
    #[arg(long, global = true, env = "PITR_REPO", value_name = "URL")]
    pub repo: Option<String>,

    /// Barman server name: the folder under the prefix that holds this cluster (required)
    #[arg(long, global = true, env = "PITR_SERVER_NAME", value_name = "NAME")]
    pub server_name: Option<String>,

    /// S3 endpoint, e.g. https://rgw.example:7443 (Ceph RGW, MinIO); AWS when unset
    #[arg(long, global = true, env = "PITR_ENDPOINT_URL", value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// S3 region (any name for Ceph RGW and MinIO)
    #[arg(long, global = true, env = "PITR_REGION", default_value = "us-east-1")]
    pub region: String,

    /// PEM file of CA certificates to trust besides the system's
    #[arg(long, global = true, env = "PITR_CA_BUNDLE", value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,

    /// Use virtual-host-style S3 addressing instead of path style
    #[arg(long, global = true, env = "PITR_S3_VIRTUAL_HOST_STYLE")]
    pub virtual_host_style: bool,

    /// S3 multipart part size in MiB (5-5120); a base backup larger than
    /// 8,000 parts of it gets larger parts by itself (memory: about 3 parts)
    #[arg(long, global = true, env = "PITR_S3_PART_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(5..=5120))]
    pub s3_part_size: u32,

    /// Attempts per S3 request (1: no retry); failed attempts are retried
    /// with exponential backoff (about 1 s, doubling, at most 20 s)
    #[arg(long, global = true, env = "PITR_S3_ATTEMPTS", default_value_t = pitr::config::DEFAULT_REQUEST_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..=100), value_name = "N")]
    pub s3_attempts: u32,

    /// Seconds to wait for a connection to the S3 store
    #[arg(
        long,
        global = true,
        env = "PITR_S3_CONNECT_TIMEOUT",
        default_value_t = 5.0,
        value_name = "SECS"
    )]
    pub s3_connect_timeout: f64,

    /// Seconds to wait for the S3 store's answer to a request, and the
    /// longest a transfer may make no progress (a stall)
    #[arg(
        long,
        global = true,
        env = "PITR_S3_READ_TIMEOUT",
        default_value_t = 60.0,
        value_name = "SECS"
    )]
    pub s3_read_timeout: f64,

    /// Seconds one S3 request may take with all its attempts and the
    /// backoff between them (0: no limit but the attempts')
    #[arg(
        long,
        global = true,
        env = "PITR_S3_REQUEST_TIME_LIMIT",
        default_value_t = 900.0,
        value_name = "SECS"
    )]
    pub s3_request_time_limit: f64,

    /// Server-side encryption: none, AES256 (SSE-S3) or aws:kms (SSE-KMS)
    #[arg(long, global = true, env = "PITR_SSE", default_value = "none")]
    pub sse: String,

    /// KMS key id for --sse aws:kms
    #[arg(long, global = true, env = "PITR_SSE_KMS_KEY_ID", value_name = "ID")]
    pub sse_kms_key_id: Option<String>,

    /// Compression of stored objects: zstd, lz4, gzip, bzip2, xz, snappy or
    /// none (barman-cloud's suffixes; every one is read whatever this says)
    #[arg(long, global = true, env = "PITR_COMPRESSION", default_value = "gzip")]
    pub compression: String,

    /// Compression level: gzip and bzip2 1-9 (default 1 and 9), zstd 1-19
    /// (default 3), xz 0-9 (default 3); lz4, snappy and none have none
    #[arg(long, global = true, env = "PITR_COMPRESSION_LEVEL", value_name = "N")]
    pub compression_level: Option<i32>,

    /// File holding a 256-bit key for client-side AES-256-GCM encryption
    #[arg(
        long,
        global = true,
        env = "PITR_ENCRYPTION_KEY_FILE",
        value_name = "FILE"
    )]
    pub encryption_key_file: Option<PathBuf>,
}

/// A duration flag: a number of seconds, not negative.
fn seconds(v: f64, flag: &str) -> Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(v).map_err(|_| {
        Error::Config(format!(
            "{flag} {v}: give a number of seconds, 0 or more (e.g. 30 or 2.5)"
        ))
    })
}

fn absolute(p: &std::path::Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

impl RepoArgs {
    /// The flags that reach this repository for reading (repository,
    /// server, endpoint, CA, key file), for a command pitr writes or starts
    /// itself: restore_command, the prefetcher. Never credentials.
    pub fn fetch_args(&self) -> Vec<String> {
        let flags: [(&str, Option<String>); 6] = [
            ("--repo", self.repo.clone()),
            ("--server-name", self.server_name.clone()),
            ("--endpoint-url", self.endpoint_url.clone()),
            (
                "--region",
                Some(self.region.clone()).filter(|x| x != "us-east-1"),
            ),
            ("--ca-bundle", self.ca_bundle.as_deref().map(absolute)),
            (
                "--encryption-key-file",
                self.encryption_key_file.as_deref().map(absolute),
            ),
        ];
        let mut out = Vec::new();
        for (flag, value) in flags {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                out.push(flag.to_string());
                out.push(v);
            }
        }
        if self.virtual_host_style {
            out.push("--virtual-host-style".into());
        }
        // Timeouts given other than the defaults (wal-fetch's attempts are
        // its own --retries).
        let timeouts = [
            ("--s3-connect-timeout", self.s3_connect_timeout, 5.0),
            ("--s3-read-timeout", self.s3_read_timeout, 60.0),
            ("--s3-request-time-limit", self.s3_request_time_limit, 900.0),
        ];
        for (flag, value, default) in timeouts {
            if value != default {
                out.push(flag.to_string());
                out.push(value.to_string());
            }
        }
        out
    }

    pub fn to_config(&self) -> Result<RepoConfig> {
        self.to_config_with(&|k| std::env::var(k).ok())
    }

    /// As [`RepoArgs::to_config`], with the variables that are not flags
    /// (credentials, the CloudNativePG Secret's keys) from `lookup`.
    pub fn to_config_with(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<RepoConfig> {
        let compression = Compression::parse(&self.compression, self.compression_level)?;
        let kms = self.sse_kms_key_id.clone().filter(|s| !s.is_empty());
        let sse = Sse::parse(&self.sse, kms.clone())?;
        if kms.is_some() && !matches!(sse, Sse::Kms { .. }) {
            return Err(Error::Config(
                "--sse-kms-key-id / PITR_SSE_KMS_KEY_ID is set, but --sse is not aws:kms".into(),
            ));
        }
        let required = |v: &Option<String>, what: &str| {
            v.clone().filter(|v| !v.is_empty()).ok_or_else(|| {
                Error::Config(format!(
                    "{what} is not set: pass it or set it in the environment or the settings file"
                ))
            })
        };
        // The keys CloudNativePG users keep in their object-store Secret
        // (S3_BUCKET, S3_PATH, S3_ENDPOINT, S3_REGION) stand in for unset flags.
        let env = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let repo = self.repo.clone().filter(|r| !r.is_empty()).or_else(|| {
            env("S3_BUCKET").map(|b| repository_of_secret(&b, env("S3_PATH").as_deref()))
        });
        let endpoint_url = self
            .endpoint_url
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| env("S3_ENDPOINT"));
        if endpoint_url
            .as_deref()
            .is_some_and(pitr::config::url_has_credentials)
        {
            return Err(Error::Config(
                "--endpoint-url / PITR_ENDPOINT_URL (or S3_ENDPOINT) holds a user name or \
                 password (scheme://user:password@host; not shown): S3 does not use them, and \
                 messages and restore_command would show them. Remove them and give the keys \
                 as S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY"
                    .into(),
            ));
        }
        let region = match (self.region.as_str(), env("S3_REGION")) {
            ("us-east-1", Some(r)) if lookup("PITR_REGION").is_none() => r,
            (r, _) => r.to_string(),
        };
        Ok(RepoConfig {
            location: required(&repo, "--repo / PITR_REPO (or S3_BUCKET)")?.parse()?,
            server_name: required(&self.server_name, "--server-name / PITR_SERVER_NAME")?,
            s3: S3Settings {
                endpoint_url,
                region,
                ca_bundle: self.ca_bundle.clone(),
                credentials: S3Credentials::from_lookup(lookup),
                sse,
                path_style: !self.virtual_host_style,
                part_size: self.s3_part_size as usize * (1 << 20),
                request_attempts: self.s3_attempts,
                connect_timeout: seconds(self.s3_connect_timeout, "--s3-connect-timeout")?,
                read_timeout: seconds(self.s3_read_timeout, "--s3-read-timeout")?,
                request_time_limit: Some(seconds(
                    self.s3_request_time_limit,
                    "--s3-request-time-limit",
                )?)
                .filter(|d| !d.is_zero()),
            },
            compression,
            encryption_key_file: self.encryption_key_file.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        repo: RepoArgs,
    }

    #[test]
    fn an_endpoint_with_credentials_is_refused_without_showing_them() {
        let args = |endpoint: &str| {
            Cmd::parse_from([
                "pitr",
                "--repo",
                "s3://bucket/p",
                "--server-name",
                "main",
                "--endpoint-url",
                endpoint,
            ])
            .repo
        };
        let e = args("https://AKIAX:SeCrEtPw@rgw:7443")
            .to_config_with(&|_| None)
            .unwrap_err();
        assert_eq!(e.kind(), pitr::error::ErrorKind::Config);
        let e = e.to_string();
        assert!(
            e.contains("--endpoint-url") && !e.contains("SeCrEtPw"),
            "{e}"
        );
        assert!(!e.contains("AKIAX"), "{e}");
        // The same from CloudNativePG's S3_ENDPOINT.
        let e = Cmd::parse_from(["pitr", "--repo", "s3://bucket/p", "--server-name", "main"])
            .repo
            .to_config_with(&|k| (k == "S3_ENDPOINT").then(|| "http://u:SeCrEtPw@h:80".into()))
            .unwrap_err();
        assert!(!e.to_string().contains("SeCrEtPw"), "{e}");
        assert!(args("https://rgw:7443").to_config_with(&|_| None).is_ok());
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        repo: super::RepoArgs,
    }

    fn parse(args: &[&str]) -> super::RepoArgs {
        let mut all = vec!["pitr", "--repo", "s3://bucket/p", "--server-name", "main"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().repo
    }

    #[test]
    fn timeouts_given_reach_the_restore_command_and_the_settings() {
        let a = parse(&["--s3-read-timeout", "10", "--s3-request-time-limit", "0"]);
        let flags = a.fetch_args();
        assert!(
            flags.windows(2).any(|w| w == ["--s3-read-timeout", "10"]),
            "{flags:?}"
        );
        assert!(
            flags
                .windows(2)
                .any(|w| w == ["--s3-request-time-limit", "0"]),
            "{flags:?}"
        );
        assert!(
            !flags.iter().any(|f| f == "--s3-connect-timeout"),
            "{flags:?}"
        );
        let cfg = a.to_config_with(&|_| None).unwrap();
        assert_eq!(cfg.s3.read_timeout, std::time::Duration::from_secs(10));
        assert_eq!(cfg.s3.request_time_limit, None, "0: no limit");
        assert_eq!(cfg.s3.request_attempts, 3);

        let bad = parse(&["--s3-connect-timeout=-1"]).to_config_with(&|_| None);
        let e = bad.unwrap_err().to_string();
        assert!(e.contains("--s3-connect-timeout -1"), "{e}");
        assert!(Cli::try_parse_from(["pitr", "--s3-attempts", "0"]).is_err());
    }
}
