//! Where the WAL goes: read from the Cluster JSON that every call carries
//! (the `spec.plugins[]` entry named [`PLUGIN_NAME`], or for recovery the
//! `externalClusters[]` entry the recovery source names), with the users'
//! existing `S3_*` Secret keys in the sidecar's environment as fallback.
//! Credentials come only from the environment.
//!
//! Parameters (camelCase, like CloudNativePG's own):
//!
//! | parameter | default | meaning |
//! | --- | --- | --- |
//! | `repository` | `s3://$S3_BUCKET/$S3_PATH` | `s3://bucket[/prefix]` or `file:///dir` |
//! | `serverName` | the Cluster's (or external cluster's) name | Barman server folder |
//! | `endpointURL` | `$S3_ENDPOINT`, else AWS | S3 endpoint |
//! | `region` | `$S3_REGION`, else `us-east-1` | S3 region |
//! | `sse` | `none` | `none`, `AES256` or `aws:kms` |
//! | `sseKmsKeyId` | - | KMS key for `aws:kms` |
//! | `compression` | `gzip` | `zstd`, `lz4`, `gzip`, `bzip2`, `xz`, `snappy` or `none` (WAL and backups; every one is read) |
//! | `compressionLevel` | the compression's default | gzip/bzip2 1-9, zstd 1-19, xz 0-9 |
//! | `caFile` | `$PITR_CA_BUNDLE` | PEM CA bundle inside the sidecar |
//! | `s3PartSizeMiB` | 16 | multipart part size, 5-5120 |
//! | `restoreRetries` | 5 | retries of a failed restore within one call |
//! | `restoreRetryWaitSeconds` | 1 | wait before the first retry, doubling |
//! | `backupConnection` | the PG* environment, user postgres | conninfo for backups |
//! | `backupCheckpoint` | fast | `fast` or `spread` |
//! | `backupWalTimeoutSeconds` | 120 | wait for a backup's last segment |
//! | `statusIntervalSeconds` | `$PITR_STATUS_INTERVAL_SECONDS`, 60 | metrics status refresh |
//! | `retentionPolicy` | - | applied after each successful backup: `30d`, `4w`, `6m`, `REDUNDANCY N`, `RECOVERY WINDOW OF N DAYS` |
//! | `minimumRedundancy` | 0 | never leave fewer DONE backups than this |
//!
//! A Backup's `pluginConfiguration.parameters` override these for that
//! backup, and may also hold `name` (the backup's name).
//!
//! The lifecycle parameters (`credentialsSecret`, `caSecret`, `caKey`,
//! `cpuRequest`, `memoryRequest`, `cpuLimit`, `memoryLimit`) are read by the
//! operator side (see `lifecycle.rs`) and accepted here.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use pitr::codec::Compression;
use pitr::config::{RepoConfig, RepoLocation, S3Credentials, S3Settings, Sse};
use pitr::pgwire::Checkpoint;
use pitr::retention::RetentionPolicy;
use pitr::wal::restore_command::RetryPolicy;
use serde_json::Value;

use crate::PLUGIN_NAME;

/// Parameter names.
pub mod param {
    pub const REPOSITORY: &str = "repository";
    pub const SERVER_NAME: &str = "serverName";
    pub const ENDPOINT_URL: &str = "endpointURL";
    pub const REGION: &str = "region";
    pub const SSE: &str = "sse";
    pub const SSE_KMS_KEY_ID: &str = "sseKmsKeyId";
    pub const COMPRESSION: &str = "compression";
    pub const COMPRESSION_LEVEL: &str = "compressionLevel";
    pub const CA_FILE: &str = "caFile";
    pub const S3_PART_SIZE_MIB: &str = "s3PartSizeMiB";
    pub const RESTORE_RETRIES: &str = "restoreRetries";
    pub const RESTORE_RETRY_WAIT_SECONDS: &str = "restoreRetryWaitSeconds";
    pub const ARCHIVE_CONCURRENCY: &str = "archiveConcurrency";
    pub const PREFETCH: &str = "prefetch";
    // Read by the operator side when it injects the sidecar.
    pub const CREDENTIALS_SECRET: &str = "credentialsSecret";
    pub const CA_SECRET: &str = "caSecret";
    pub const CA_KEY: &str = "caKey";
    pub const CPU_REQUEST: &str = "cpuRequest";
    pub const MEMORY_REQUEST: &str = "memoryRequest";
    pub const CPU_LIMIT: &str = "cpuLimit";
    pub const MEMORY_LIMIT: &str = "memoryLimit";
    // Backups (Backup.Backup) and metrics.
    pub const BACKUP_CONNECTION: &str = "backupConnection";
    pub const BACKUP_CHECKPOINT: &str = "backupCheckpoint";
    pub const BACKUP_WAL_TIMEOUT_SECONDS: &str = "backupWalTimeoutSeconds";
    pub const STATUS_INTERVAL_SECONDS: &str = "statusIntervalSeconds";
    pub const RETENTION_POLICY: &str = "retentionPolicy";
    pub const MINIMUM_REDUNDANCY: &str = "minimumRedundancy";
    /// Only in a Backup's `pluginConfiguration.parameters`: the backup's
    /// name (default: the Backup resource's `metadata.name`).
    pub const NAME: &str = "name";

    pub const ALL: [&str; 27] = [
        REPOSITORY,
        SERVER_NAME,
        ENDPOINT_URL,
        REGION,
        SSE,
        SSE_KMS_KEY_ID,
        COMPRESSION,
        COMPRESSION_LEVEL,
        CA_FILE,
        S3_PART_SIZE_MIB,
        RESTORE_RETRIES,
        RESTORE_RETRY_WAIT_SECONDS,
        ARCHIVE_CONCURRENCY,
        PREFETCH,
        CREDENTIALS_SECRET,
        CA_SECRET,
        CA_KEY,
        CPU_REQUEST,
        MEMORY_REQUEST,
        CPU_LIMIT,
        MEMORY_LIMIT,
        BACKUP_CONNECTION,
        BACKUP_CHECKPOINT,
        BACKUP_WAL_TIMEOUT_SECONDS,
        STATUS_INTERVAL_SECONDS,
        RETENTION_POLICY,
        MINIMUM_REDUNDANCY,
    ];
}

/// Defaults.
pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_PART_SIZE_MIB: u32 = 16;
pub const DEFAULT_RESTORE_RETRIES: u32 = 5;
pub const DEFAULT_RESTORE_RETRY_WAIT: Duration = Duration::from_secs(1);
/// Files archived at once: the one asked for and the next ready ones.
pub const DEFAULT_ARCHIVE_CONCURRENCY: u32 = 8;
/// Segments downloaded ahead of recovery.
pub const DEFAULT_PREFETCH: u32 = 8;
/// As `pitr backup --wal-timeout`.
pub const DEFAULT_BACKUP_WAL_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the sidecar re-reads the repository's status for metrics.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(60);

/// A setting that cannot be used: names the parameter (or the Cluster
/// field) and the fix. Becomes `InvalidArgument`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError(pub String);

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SettingsError {}

type Result<T> = std::result::Result<T, SettingsError>;

/// What the sidecar process was started with, read once (the kubelet fills
/// it from the injected container's env and `envFrom`).
#[derive(Debug, Clone, Default)]
pub struct SidecarEnv {
    pub pgdata: Option<PathBuf>,
    pub pod_name: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_path: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub ca_bundle: Option<PathBuf>,
    pub credentials: Option<S3Credentials>,
    /// `PITR_STATUS_INTERVAL_SECONDS`: the default of parameter
    /// `statusIntervalSeconds`.
    pub status_interval: Option<String>,
}

impl SidecarEnv {
    pub fn from_process() -> SidecarEnv {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
        SidecarEnv {
            pgdata: var("PGDATA").map(PathBuf::from),
            pod_name: var("POD_NAME"),
            s3_bucket: var("S3_BUCKET"),
            s3_path: var("S3_PATH"),
            s3_endpoint: var("S3_ENDPOINT"),
            s3_region: var("S3_REGION"),
            ca_bundle: var("PITR_CA_BUNDLE").map(PathBuf::from),
            credentials: S3Credentials::from_env(),
            status_interval: var("PITR_STATUS_INTERVAL_SECONDS"),
        }
    }
}

/// Everything that identifies an opened repository. Two calls with equal
/// settings share one warm [`pitr::repo::Repo`].
#[derive(Debug, Clone, PartialEq)]
pub struct RepoSettings {
    pub location: RepoLocation,
    pub server_name: String,
    pub endpoint_url: Option<String>,
    pub region: String,
    pub ca_file: Option<PathBuf>,
    pub sse: Sse,
    pub compression: Compression,
    pub part_size: usize,
}

impl RepoSettings {
    /// The library's configuration; `request_attempts` is the store
    /// client's own retry count.
    pub fn to_config(
        &self,
        credentials: Option<S3Credentials>,
        request_attempts: u32,
    ) -> RepoConfig {
        RepoConfig {
            location: self.location.clone(),
            server_name: self.server_name.clone(),
            s3: S3Settings {
                endpoint_url: self.endpoint_url.clone(),
                region: self.region.clone(),
                ca_bundle: self.ca_file.clone(),
                credentials,
                sse: self.sse.clone(),
                path_style: true,
                part_size: self.part_size,
                request_attempts,
                ..S3Settings::default()
            },
            compression: self.compression,
            encryption_key_file: None,
        }
    }
}

/// The settings of one WAL call.
#[derive(Debug, Clone, PartialEq)]
pub struct WalSettings {
    pub repo: RepoSettings,
    pub restore_retry: RetryPolicy,
    /// Files pushed at once by Archive (1: no look-ahead).
    pub archive_concurrency: u32,
    /// Segments prefetched by Restore (0: none).
    pub prefetch: u32,
}

/// A decoded Cluster (lenient: only the fields the plugin reads).
pub struct Cluster(Value);

impl Cluster {
    pub fn parse(bytes: &[u8]) -> Result<Cluster> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            SettingsError(format!(
                "the cluster definition sent by CloudNativePG is not valid JSON: {e}"
            ))
        })?;
        if !v.is_object() {
            return Err(SettingsError(
                "the cluster definition sent by CloudNativePG is not a JSON object".into(),
            ));
        }
        Ok(Cluster(v))
    }

    pub fn json(&self) -> &Value {
        &self.0
    }

    pub fn name(&self) -> &str {
        self.0
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn namespace(&self) -> &str {
        self.0
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The `spec.plugins[]` entry for this plugin, if any.
    pub fn own_entry(&self) -> Option<&Value> {
        self.0
            .pointer("/spec/plugins")
            .and_then(Value::as_array)?
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(PLUGIN_NAME))
    }

    /// True when `spec.plugins[]` has this plugin and it is not disabled
    /// (`enabled` defaults to true).
    pub fn plugin_enabled(&self) -> bool {
        self.own_entry()
            .is_some_and(|e| e.get("enabled").and_then(Value::as_bool) != Some(false))
    }

    /// The `externalClusters[]` entry named `name`.
    pub fn external_cluster(&self, name: &str) -> Option<&Value> {
        self.0
            .pointer("/spec/externalClusters")
            .and_then(Value::as_array)?
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
    }

    /// `spec.bootstrap.recovery.source`.
    /// Whether the Cluster keeps its WAL on a volume of its own
    /// (`spec.walStorage`).
    pub fn has_wal_storage(&self) -> bool {
        self.json()
            .pointer("/spec/walStorage")
            .is_some_and(|w| !w.is_null())
    }

    pub fn recovery_source(&self) -> Option<&str> {
        self.0
            .pointer("/spec/bootstrap/recovery/source")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// `spec.replica.source` when the replica cluster is enabled.
    pub fn replica_source(&self) -> Option<&str> {
        let replica = self.0.pointer("/spec/replica")?;
        if replica.get("enabled").and_then(Value::as_bool) == Some(false) {
            return None;
        }
        replica
            .get("source")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The parameters of the external cluster `name` when its `plugin`
    /// block names this plugin.
    pub fn external_params(&self, name: &str) -> Option<Result<Params>> {
        let plugin = self.external_cluster(name)?.get("plugin")?;
        (plugin.get("name").and_then(Value::as_str) == Some(PLUGIN_NAME)).then(|| {
            Params::from_json(
                plugin.get("parameters"),
                &format!("externalClusters[{name}].plugin.parameters"),
            )
        })
    }

    /// The parameters of this plugin's `spec.plugins[]` entry.
    pub fn own_params(&self) -> Result<Params> {
        let entry = self.own_entry().ok_or_else(|| {
            SettingsError(format!(
                "cluster '{}' has no spec.plugins entry named {PLUGIN_NAME}: add one \
                 (with isWALArchiver: true) to archive WAL through pitr",
                self.name()
            ))
        })?;
        Params::from_json(entry.get("parameters"), "spec.plugins[].parameters")
    }

    fn current_primary(&self) -> &str {
        self.0
            .pointer("/status/currentPrimary")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `cnpg.io/skipEmptyWalArchiveCheck: enabled`.
    pub fn skips_empty_archive_check(&self) -> bool {
        self.0
            .pointer("/metadata/annotations/cnpg.io~1skipEmptyWalArchiveCheck")
            .and_then(Value::as_str)
            == Some("enabled")
    }
}

/// One entry's `parameters`, checked against the known names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    values: BTreeMap<String, String>,
    /// Where they came from, for messages.
    origin: String,
}

impl Params {
    pub fn from_json(v: Option<&Value>, origin: &str) -> Result<Params> {
        let mut values = BTreeMap::new();
        match v {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    let Some(s) = v.as_str() else {
                        return Err(SettingsError(format!(
                            "{origin}: parameter '{k}' must be a string (CloudNativePG passes \
                             parameters as strings): quote it"
                        )));
                    };
                    if !param::ALL.contains(&k.as_str()) {
                        return Err(SettingsError(format!(
                            "{origin}: unknown parameter '{k}' for {PLUGIN_NAME}; known \
                             parameters: {}",
                            param::ALL.join(", ")
                        )));
                    }
                    values.insert(k.clone(), s.to_string());
                }
            }
            Some(_) => return Err(SettingsError(format!("{origin} must be a map of strings"))),
        }
        Ok(Params {
            values,
            origin: origin.into(),
        })
    }

    /// A parameter's value; empty counts as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn bad(&self, name: &str, value: &str, why: impl fmt::Display) -> SettingsError {
        SettingsError(format!(
            "{}: parameter {name} = '{value}' is not usable: {why}",
            self.origin
        ))
    }

    fn number<T: std::str::FromStr + PartialOrd + fmt::Display>(
        &self,
        name: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T> {
        let Some(v) = self.get(name) else {
            return Ok(default);
        };
        match v.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(self.bad(
                name,
                v,
                format_args!("use a number from {} to {}", range.start(), range.end()),
            )),
        }
    }
}

impl Params {
    /// These parameters with `overrides` on top (a Backup's
    /// `pluginConfiguration.parameters`, named `origin` in messages), which
    /// may also hold [`param::NAME`].
    pub fn with_overrides(
        &self,
        overrides: &std::collections::HashMap<String, String>,
        origin: &str,
    ) -> Result<Params> {
        let mut values = self.values.clone();
        let sorted: BTreeMap<_, _> = overrides.iter().collect();
        for (k, v) in sorted {
            if !param::ALL.contains(&k.as_str()) && k != param::NAME {
                return Err(SettingsError(format!(
                    "{origin}: unknown parameter '{k}' for {PLUGIN_NAME}; known parameters: \
                     {}, {}",
                    param::NAME,
                    param::ALL.join(", ")
                )));
            }
            values.insert(k.clone(), v.clone());
        }
        Ok(Params {
            values,
            origin: format!("{} with {origin}", self.origin),
        })
    }
}

/// What a Backup.Backup call does.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupSettings {
    pub repo: RepoSettings,
    /// The backup's name: parameter `name`, else the Backup resource's.
    pub name: Option<String>,
    /// A connection string over the sidecar's PG* environment (parameter
    /// `backupConnection`); may hold a password, so never logged.
    pub connection: Option<String>,
    pub checkpoint: Checkpoint,
    pub wal_timeout: Duration,
    /// Applied after the backup succeeds (parameter `retentionPolicy`).
    pub retention: Option<RetentionPolicy>,
    pub minimum_redundancy: u32,
}

/// Settings for `Backup.Backup`: the Cluster's own entry, overridden by the
/// Backup's parameters; `backup_name` is the Backup's `metadata.name`.
pub fn for_backup(
    cluster: &Cluster,
    overrides: &std::collections::HashMap<String, String>,
    backup_name: Option<&str>,
    env: &SidecarEnv,
) -> Result<BackupSettings> {
    let params = cluster
        .own_params()?
        .with_overrides(overrides, "the Backup's pluginConfiguration.parameters")?;
    let repo = resolve(&params, cluster.name(), env)?.repo;
    let checkpoint = match params.get(param::BACKUP_CHECKPOINT).unwrap_or("fast") {
        "fast" => Checkpoint::Fast,
        "spread" => Checkpoint::Spread,
        other => return Err(params.bad(param::BACKUP_CHECKPOINT, other, "use fast or spread")),
    };
    let wal_timeout = params.number(
        param::BACKUP_WAL_TIMEOUT_SECONDS,
        DEFAULT_BACKUP_WAL_TIMEOUT.as_secs(),
        1..=86_400,
    )?;
    let retention = match params.get(param::RETENTION_POLICY) {
        None => None,
        Some(v) => Some(
            v.parse::<RetentionPolicy>()
                .map_err(|e| params.bad(param::RETENTION_POLICY, v, e))?,
        ),
    };
    let minimum_redundancy = params.number(param::MINIMUM_REDUNDANCY, 0u32, 0..=10_000)?;
    Ok(BackupSettings {
        repo,
        retention,
        minimum_redundancy,
        name: params
            .get(param::NAME)
            .or(backup_name.filter(|n| !n.is_empty()))
            .map(str::to_string),
        connection: params.get(param::BACKUP_CONNECTION).map(str::to_string),
        checkpoint,
        wal_timeout: Duration::from_secs(wal_timeout),
    })
}

/// What the metrics refresh reads: the Cluster's own archive, and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSettings {
    pub repo: RepoSettings,
    pub interval: Duration,
}

pub fn for_status(cluster: &Cluster, env: &SidecarEnv) -> Result<StatusSettings> {
    let params = cluster.own_params()?;
    let repo = resolve(&params, cluster.name(), env)?.repo;
    let default = match env.status_interval.as_deref() {
        None => DEFAULT_STATUS_INTERVAL.as_secs(),
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=86_400).contains(n))
            .ok_or_else(|| {
                SettingsError(format!(
                    "PITR_STATUS_INTERVAL_SECONDS = '{v}' in the sidecar's environment: use a \
                 number of seconds from 1 to 86400"
                ))
            })?,
    };
    let secs = params.number(param::STATUS_INTERVAL_SECONDS, default, 1..=86_400)?;
    Ok(StatusSettings {
        repo,
        interval: Duration::from_secs(secs),
    })
}

/// Resolves the repository settings from `params`, with `default_server`
/// when `serverName` is unset.
pub fn resolve(params: &Params, default_server: &str, env: &SidecarEnv) -> Result<WalSettings> {
    let location = match params.get(param::REPOSITORY) {
        Some(url) => url
            .parse::<RepoLocation>()
            .map_err(|e| params.bad(param::REPOSITORY, url, e))?,
        None => {
            let bucket = env.s3_bucket.as_deref().ok_or_else(|| {
                SettingsError(format!(
                    "{}: parameter {} is not set and the sidecar has no S3_BUCKET in its \
                     environment: set {} (s3://bucket[/prefix] or file:///dir) or give the \
                     sidecar the S3 Secret (parameter {})",
                    params.origin,
                    param::REPOSITORY,
                    param::REPOSITORY,
                    param::CREDENTIALS_SECRET
                ))
            })?;
            let url = pitr::config::repository_of_secret(bucket, env.s3_path.as_deref());
            url.parse::<RepoLocation>().map_err(|e| {
                SettingsError(format!(
                    "S3_BUCKET / S3_PATH in the sidecar's environment make '{url}': {e}"
                ))
            })?
        }
    };

    let server_name = params
        .get(param::SERVER_NAME)
        .unwrap_or(default_server)
        .to_string();
    if server_name.is_empty() {
        return Err(SettingsError(format!(
            "{}: parameter {} is not set and the cluster has no metadata.name",
            params.origin,
            param::SERVER_NAME
        )));
    }
    RepoConfig::validate_server_name(&server_name)
        .map_err(|e| params.bad(param::SERVER_NAME, &server_name, e))?;

    let endpoint_url = params
        .get(param::ENDPOINT_URL)
        .map(str::to_string)
        .or_else(|| env.s3_endpoint.clone());
    if let Some(url) = &endpoint_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(params.bad(
                param::ENDPOINT_URL,
                url,
                "write the URL with its scheme, e.g. https://rgw.example:7443 \
                 (from the parameter or S3_ENDPOINT)",
            ));
        }
    }
    let region = params
        .get(param::REGION)
        .map(str::to_string)
        .or_else(|| env.s3_region.clone())
        .unwrap_or_else(|| DEFAULT_REGION.into());

    let kms = params.get(param::SSE_KMS_KEY_ID).map(str::to_string);
    let sse_mode = params.get(param::SSE).unwrap_or("none");
    let sse = Sse::parse(sse_mode, kms.clone()).map_err(|e| params.bad(param::SSE, sse_mode, e))?;
    if kms.is_some() && !matches!(sse, Sse::Kms { .. }) {
        return Err(SettingsError(format!(
            "{}: parameter {} is set, but {} is '{sse_mode}', not aws:kms",
            params.origin,
            param::SSE_KMS_KEY_ID,
            param::SSE
        )));
    }

    let level = match params.get(param::COMPRESSION_LEVEL) {
        None => None,
        Some(v) => Some(v.trim().parse::<i32>().map_err(|_| {
            params.bad(
                param::COMPRESSION_LEVEL,
                v,
                "give a whole number, such as 3",
            )
        })?),
    };
    let name = params.get(param::COMPRESSION).unwrap_or("gzip");
    let compression = Compression::parse(name, level).map_err(|e| match level {
        Some(l) if Compression::default_for(name).is_ok() => {
            params.bad(param::COMPRESSION_LEVEL, &l.to_string(), e)
        }
        _ => params.bad(param::COMPRESSION, name, e),
    })?;

    let ca_file = match params.get(param::CA_FILE) {
        Some(p) if !p.starts_with('/') => {
            return Err(params.bad(
                param::CA_FILE,
                p,
                "give an absolute path inside the sidecar (or set caSecret)",
            ))
        }
        Some(p) => Some(PathBuf::from(p)),
        None => env.ca_bundle.clone(),
    };

    let part_mib = params.number(param::S3_PART_SIZE_MIB, DEFAULT_PART_SIZE_MIB, 5..=5120)?;
    let retries = params.number(param::RESTORE_RETRIES, DEFAULT_RESTORE_RETRIES, 0..=20)?;
    let wait = params.number(
        param::RESTORE_RETRY_WAIT_SECONDS,
        DEFAULT_RESTORE_RETRY_WAIT.as_secs_f64(),
        0.0..=60.0,
    )?;
    let archive_concurrency = params.number(
        param::ARCHIVE_CONCURRENCY,
        DEFAULT_ARCHIVE_CONCURRENCY,
        1..=64,
    )?;
    let prefetch = params.number(param::PREFETCH, DEFAULT_PREFETCH, 0..=64)?;

    Ok(WalSettings {
        repo: RepoSettings {
            location,
            server_name,
            endpoint_url,
            region,
            ca_file,
            sse,
            compression,
            part_size: part_mib as usize * (1 << 20),
        },
        restore_retry: RetryPolicy {
            attempts: retries + 1,
            first_wait: Duration::from_secs_f64(wait),
        },
        archive_concurrency,
        prefetch,
    })
}

/// Settings for `WAL.Archive`: the Cluster's own entry.
pub fn for_archive(cluster: &Cluster, env: &SidecarEnv) -> Result<WalSettings> {
    resolve(&cluster.own_params()?, cluster.name(), env)
}

/// Which archive a `WAL.Restore` reads, as plugin-barman-cloud decides it:
/// a designated primary of a replica cluster reads the replica source;
/// a pod with no current primary yet (bootstrap) reads the recovery
/// source; everything else reads the Cluster's own archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSource {
    Own,
    External(String),
}

pub fn restore_source(cluster: &Cluster, env: &SidecarEnv) -> RestoreSource {
    let primary = cluster.current_primary();
    let this_pod = env.pod_name.as_deref().unwrap_or_default();
    if !primary.is_empty() && primary == this_pod {
        if let Some(src) = cluster.replica_source() {
            return RestoreSource::External(src.to_string());
        }
    }
    if primary.is_empty() {
        if let Some(src) = cluster.recovery_source() {
            return RestoreSource::External(src.to_string());
        }
    }
    RestoreSource::Own
}

/// Settings for `WAL.Restore`.
pub fn for_restore(cluster: &Cluster, env: &SidecarEnv) -> Result<WalSettings> {
    match restore_source(cluster, env) {
        RestoreSource::Own => for_archive(cluster, env),
        RestoreSource::External(name) => match cluster.external_params(&name) {
            Some(params) => resolve(&params?, &name, env),
            None => Err(SettingsError(format!(
                "WAL for this pod comes from external cluster '{name}', which is missing from \
                 spec.externalClusters or does not use plugin {PLUGIN_NAME}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(v: Value) -> Cluster {
        Cluster::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    fn with_params(params: Value) -> Cluster {
        cluster(json!({
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": "pg-main", "namespace": "db"},
            "spec": {"plugins": [
                {"name": "other.example.io", "parameters": {"x": "y"}},
                {"name": PLUGIN_NAME, "isWALArchiver": true, "parameters": params}
            ]}
        }))
    }

    #[test]
    fn parameters_with_defaults() {
        let c = with_params(json!({"repository": "s3://bkt/pg/"}));
        let s = for_archive(&c, &SidecarEnv::default()).unwrap();
        assert_eq!(
            s.repo.location,
            RepoLocation::S3 {
                bucket: "bkt".into(),
                prefix: "pg".into()
            }
        );
        assert_eq!(s.repo.server_name, "pg-main");
        assert_eq!(s.repo.region, "us-east-1");
        assert_eq!(s.repo.endpoint_url, None);
        assert_eq!(s.repo.sse, Sse::None);
        assert_eq!(s.repo.compression, Compression::Gzip { level: 1 });
        assert_eq!(s.repo.part_size, 16 << 20);
        assert_eq!(s.restore_retry.attempts, 6);
        assert_eq!(s.restore_retry.first_wait, Duration::from_secs(1));
    }

    #[test]
    fn every_parameter_is_read() {
        let c = with_params(json!({
            "repository": "file:///var/lib/wal",
            "serverName": "srv",
            "endpointURL": "https://rgw:7443",
            "region": "eu",
            "sse": "aws:kms",
            "sseKmsKeyId": "k1",
            "compression": "none",
            "caFile": "/pitr-ca/ca.crt",
            "s3PartSizeMiB": "64",
            "restoreRetries": "2",
            "restoreRetryWaitSeconds": "0.5"
        }));
        let s = for_archive(&c, &SidecarEnv::default()).unwrap();
        assert_eq!(
            s.repo.location,
            RepoLocation::Fs {
                root: "/var/lib/wal".into()
            }
        );
        assert_eq!(s.repo.server_name, "srv");
        assert_eq!(s.repo.endpoint_url.as_deref(), Some("https://rgw:7443"));
        assert_eq!(s.repo.region, "eu");
        assert_eq!(
            s.repo.sse,
            Sse::Kms {
                key_id: Some("k1".into())
            }
        );
        assert_eq!(s.repo.compression, Compression::None);
        assert_eq!(s.repo.ca_file, Some("/pitr-ca/ca.crt".into()));
        assert_eq!(s.repo.part_size, 64 << 20);
        assert_eq!(s.restore_retry.attempts, 3);
        assert_eq!(s.restore_retry.first_wait, Duration::from_millis(500));
    }

    #[test]
    fn every_compression_and_its_level_are_read() {
        for (name, level, want) in [
            ("zstd", Some("9"), Compression::Zstd { level: 9 }),
            ("zstd", None, Compression::Zstd { level: 3 }),
            ("lz4", None, Compression::Lz4),
            ("bzip2", Some("5"), Compression::Bzip2 { level: 5 }),
            ("xz", None, Compression::Xz { level: 3 }),
            ("snappy", None, Compression::Snappy),
            ("gzip", Some("6"), Compression::Gzip { level: 6 }),
        ] {
            let mut p = json!({"repository": "s3://okb", "compression": name});
            if let Some(l) = level {
                p["compressionLevel"] = json!(l);
            }
            let s = for_archive(&with_params(p), &SidecarEnv::default()).unwrap();
            assert_eq!(s.repo.compression, want, "{name} {level:?}");
        }
        // lz4 has no levels: the level is the parameter at fault.
        let p = json!({"repository": "s3://okb", "compression": "lz4", "compressionLevel": "3"});
        let e = for_archive(&with_params(p), &SidecarEnv::default()).unwrap_err();
        assert!(e.0.contains("compressionLevel"), "{e}");
    }

    #[test]
    fn the_s3_secret_keys_are_the_fallback() {
        let env = SidecarEnv {
            s3_bucket: Some("seed-bucket".into()),
            s3_path: Some("/clusters/a/".into()),
            s3_endpoint: Some("https://rgw.local".into()),
            s3_region: Some("rgw".into()),
            ca_bundle: Some("/etc/ca.pem".into()),
            ..Default::default()
        };
        let s = for_archive(&with_params(json!({})), &env).unwrap();
        assert_eq!(s.repo.location.to_string(), "s3://seed-bucket/clusters/a");
        assert_eq!(s.repo.endpoint_url.as_deref(), Some("https://rgw.local"));
        assert_eq!(s.repo.region, "rgw");
        assert_eq!(s.repo.ca_file, Some("/etc/ca.pem".into()));
        // A parameter beats the environment.
        let s = for_archive(
            &with_params(json!({"repository": "s3://mine", "region": "r2"})),
            &env,
        )
        .unwrap();
        assert_eq!(s.repo.location.to_string(), "s3://mine");
        assert_eq!(s.repo.region, "r2");
        // Neither: the error names the parameter.
        let e = for_archive(&with_params(json!({})), &SidecarEnv::default()).unwrap_err();
        assert!(
            e.0.contains("repository") && e.0.contains("S3_BUCKET"),
            "{e}"
        );
    }

    #[test]
    fn bad_settings_name_the_parameter() {
        for (params, needle) in [
            (json!({"repository": "s3://B"}), "repository"),
            (
                json!({"repository": "s3://okb", "serverName": "a/b"}),
                "serverName",
            ),
            (json!({"repository": "s3://okb", "sse": "des"}), "sse"),
            (
                json!({"repository": "s3://okb", "sseKmsKeyId": "k"}),
                "sseKmsKeyId",
            ),
            (
                json!({"repository": "s3://okb", "compression": "brotli"}),
                "compression",
            ),
            (
                json!({"repository": "s3://okb", "compression": "zstd", "compressionLevel": "40"}),
                "compressionLevel",
            ),
            (
                json!({"repository": "s3://okb", "compressionLevel": "x"}),
                "compressionLevel",
            ),
            (
                json!({"repository": "s3://okb", "s3PartSizeMiB": "1"}),
                "s3PartSizeMiB",
            ),
            (
                json!({"repository": "s3://okb", "restoreRetries": "x"}),
                "restoreRetries",
            ),
            (
                json!({"repository": "s3://okb", "caFile": "ca.pem"}),
                "caFile",
            ),
            (
                json!({"repository": "s3://okb", "endpointURL": "rgw:80"}),
                "endpointURL",
            ),
            (
                json!({"repository": "s3://okb", "repositry": "s3://x"}),
                "repositry",
            ),
            (
                json!({"repository": "s3://okb", "restoreRetries": 3}),
                "restoreRetries",
            ),
        ] {
            let e = for_archive(&with_params(params.clone()), &SidecarEnv::default())
                .expect_err(&params.to_string());
            assert!(e.0.contains(needle), "{params}: {e}");
        }
        let none = cluster(json!({"metadata": {"name": "x"}, "spec": {}}));
        let e = for_archive(&none, &SidecarEnv::default()).unwrap_err();
        assert!(e.0.contains(PLUGIN_NAME), "{e}");
    }

    #[test]
    fn restore_reads_the_recovery_source_during_bootstrap() {
        let v = json!({
            "metadata": {"name": "pg-new"},
            "spec": {
                "plugins": [{"name": PLUGIN_NAME, "parameters": {"repository": "s3://new"}}],
                "bootstrap": {"recovery": {"source": "origin"}},
                "externalClusters": [{"name": "origin", "plugin": {
                    "name": PLUGIN_NAME, "parameters": {"repository": "s3://old"}}}]
            },
            "status": {}
        });
        let env = SidecarEnv {
            pod_name: Some("pg-new-1".into()),
            ..Default::default()
        };
        let s = for_restore(&cluster(v.clone()), &env).unwrap();
        assert_eq!(s.repo.location.to_string(), "s3://old");
        assert_eq!(s.repo.server_name, "origin");
        // Once a primary runs, the cluster's own archive.
        let mut running = v.clone();
        running["status"]["currentPrimary"] = json!("pg-new-1");
        let s = for_restore(&cluster(running), &env).unwrap();
        assert_eq!(s.repo.location.to_string(), "s3://new");
        assert_eq!(s.repo.server_name, "pg-new");
        // A recovery source with another plugin is an error, not our archive.
        let mut foreign = v;
        foreign["spec"]["externalClusters"][0]["plugin"]["name"] =
            json!("barman-cloud.cloudnative-pg.io");
        let e = for_restore(&cluster(foreign), &env).unwrap_err();
        assert!(e.0.contains("origin"), "{e}");
    }

    #[test]
    fn a_designated_primary_reads_the_replica_source() {
        let c = cluster(json!({
            "metadata": {"name": "pg-dr"},
            "spec": {
                "plugins": [{"name": PLUGIN_NAME, "parameters": {"repository": "s3://dr"}}],
                "replica": {"enabled": true, "source": "main"},
                "externalClusters": [{"name": "main", "plugin": {
                    "name": PLUGIN_NAME, "parameters": {"repository": "s3://main"}}}]
            },
            "status": {"currentPrimary": "pg-dr-1"}
        }));
        let on = |pod: &str| SidecarEnv {
            pod_name: Some(pod.into()),
            ..Default::default()
        };
        assert_eq!(
            restore_source(&c, &on("pg-dr-1")),
            RestoreSource::External("main".into())
        );
        assert_eq!(restore_source(&c, &on("pg-dr-2")), RestoreSource::Own);
    }

    #[test]
    fn backup_parameters_override_the_clusters() {
        use std::collections::HashMap;
        let c = with_params(json!({"repository": "s3://bkt/pg", "backupCheckpoint": "spread"}));
        let none = HashMap::new();
        let s = for_backup(&c, &none, Some("pg-main-2026"), &SidecarEnv::default()).unwrap();
        assert_eq!(s.name.as_deref(), Some("pg-main-2026"));
        assert_eq!(s.checkpoint, Checkpoint::Spread);
        assert_eq!(s.wal_timeout, DEFAULT_BACKUP_WAL_TIMEOUT);
        assert_eq!(s.connection, None);
        assert_eq!(s.repo.server_name, "pg-main");
        let over: HashMap<String, String> = [
            ("name", "nightly"),
            ("serverName", "other"),
            ("backupCheckpoint", "fast"),
            ("backupConnection", "host=/run/pg port=5433"),
            ("backupWalTimeoutSeconds", "30"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = for_backup(&c, &over, Some("pg-main-2026"), &SidecarEnv::default()).unwrap();
        assert_eq!(s.name.as_deref(), Some("nightly"));
        assert_eq!(s.repo.server_name, "other");
        assert_eq!(s.checkpoint, Checkpoint::Fast);
        assert_eq!(s.connection.as_deref(), Some("host=/run/pg port=5433"));
        assert_eq!(s.wal_timeout, Duration::from_secs(30));
        assert_eq!(s.retention, None);
        let with_policy = with_params(json!({
            "repository": "s3://bkt/pg", "retentionPolicy": "30d", "minimumRedundancy": "2"
        }));
        let s = for_backup(&with_policy, &none, None, &SidecarEnv::default()).unwrap();
        assert_eq!(
            s.retention.map(|p| p.to_string()).as_deref(),
            Some("RECOVERY WINDOW OF 30 DAYS")
        );
        assert_eq!(s.minimum_redundancy, 2);
        for (k, v) in [
            ("nmae", "x"),
            ("backupCheckpoint", "slow"),
            ("retentionPolicy", "30 days"),
            ("minimumRedundancy", "-1"),
        ] {
            let bad: HashMap<String, String> = [(k.to_string(), v.to_string())].into();
            let e = for_backup(&c, &bad, None, &SidecarEnv::default()).unwrap_err();
            assert!(
                e.0.contains(k) && e.0.contains("pluginConfiguration"),
                "{e}"
            );
        }
        // `name` belongs to a Backup, not to the Cluster's entry.
        let e = for_archive(&with_params(json!({"name": "x"})), &SidecarEnv::default());
        assert!(e.is_err());
        // The status interval: parameter, else the environment, else 60 s.
        assert_eq!(
            for_status(&c, &SidecarEnv::default()).unwrap().interval,
            DEFAULT_STATUS_INTERVAL
        );
        let env = SidecarEnv {
            status_interval: Some("7".into()),
            ..Default::default()
        };
        assert_eq!(
            for_status(&c, &env).unwrap().interval,
            Duration::from_secs(7)
        );
        let c2 = with_params(json!({"repository": "s3://bkt", "statusIntervalSeconds": "0"}));
        assert!(for_status(&c2, &env)
            .unwrap_err()
            .0
            .contains("statusIntervalSeconds"));
    }

    #[test]
    fn enabled_defaults_to_true() {
        assert!(with_params(json!({})).plugin_enabled());
        let off = cluster(json!({"spec": {"plugins": [{"name": PLUGIN_NAME, "enabled": false}]}}));
        assert!(!off.plugin_enabled());
        let other = cluster(json!({"spec": {"plugins": [{"name": "x.io"}]}}));
        assert!(!other.plugin_enabled());
        assert!(Cluster::parse(b"not json").is_err());
    }
}
