//! `pitr metrics`: the Prometheus text exposition of one server's
//! repository (or of several, one settings file each), printed once, or
//! served over HTTP with `--listen` (see `metrics_server`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, FromArgMatches};
use tracing::{error, warn};

use super::config_file;
use super::exit;
use super::metrics_server;
use super::repo_args::RepoArgs;
use pitr::config::{redact, RepoConfig};
use pitr::error::{Error, Result};
use pitr::metrics::{exposition, gather, samples, Snapshot};
use pitr::repo::Repo;

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The server's data directory, on the database host: adds the .ready
    /// backlog, the last WAL write and the archive counters as wal-push
    /// keeps them locally (fresher than the repository's record)
    #[arg(long, env = "PITR_PGDATA", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,

    /// A settings file (KEY=VALUE lines, as --config) for one more server
    /// to report; repeat for several. Its settings win over the
    /// environment; PITR_PGDATA in it is that server's --pgdata
    #[arg(long = "target-config", value_name = "FILE")]
    pub targets: Vec<PathBuf>,

    /// Serve /metrics and /healthz on this address (e.g. 0.0.0.0:9187)
    /// instead of printing once
    #[arg(long, env = "PITR_METRICS_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// With --listen: seconds between reads of the repositories (scrapes
    /// answer from the last read, never from the store)
    #[arg(long, env = "PITR_METRICS_INTERVAL", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub interval: u64,
}

/// One server to report on.
pub struct Target {
    pub repo: Repo,
    pub server: String,
    pub pgdata: Option<PathBuf>,
    pub secrets: Vec<String>,
}

fn target(cfg: RepoConfig, pgdata: Option<PathBuf>) -> Result<Target> {
    Ok(Target {
        secrets: cfg.secrets(),
        server: cfg.server_name.clone(),
        repo: Repo::open(&cfg)?,
        pgdata,
    })
}

/// The repository settings in the settings file `path`: its KEY=VALUE
/// lines stand for the flags whose environment variable they name, and
/// for the variables that are not flags (credentials); the process's
/// environment fills in what the file does not set.
fn config_of_file(path: &Path) -> Result<(RepoConfig, Option<PathBuf>)> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read --target-config {shown}: {e}")))?;
    let vars: HashMap<String, String> = config_file::parse(&text, &shown)
        .map_err(Error::Config)?
        .into_iter()
        .collect();
    let cmd =
        <RepoArgs as clap::Args>::augment_args(clap::Command::new("target").no_binary_name(true));
    let mut argv = Vec::new();
    for arg in cmd.get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        match env.to_str().and_then(|e| vars.get(e)) {
            Some(v) if arg.get_action().takes_values() => argv.push(format!("--{long}={v}")),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => {
                argv.push(format!("--{long}"))
            }
            _ => {}
        }
    }
    let matches = cmd
        .try_get_matches_from(argv)
        .map_err(|e| Error::Config(format!("{shown}: {}", e.to_string().trim_end())))?;
    let args = RepoArgs::from_arg_matches(&matches)
        .map_err(|e| Error::Config(format!("{shown}: {}", e.to_string().trim_end())))?;
    let cfg = args.to_config_with(&|k| vars.get(k).cloned().or_else(|| std::env::var(k).ok()))?;
    Ok((cfg, vars.get("PITR_PGDATA").map(PathBuf::from)))
}

/// The servers to report: the one the usual settings name (when they name
/// one, or when no --target-config is given), then each --target-config.
fn targets(args: &MetricsArgs, repo_args: &RepoArgs) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    match repo_args.to_config() {
        Ok(cfg) => out.push(target(cfg, args.pgdata.clone())?),
        Err(e) if args.targets.is_empty() => return Err(e),
        Err(_) => {}
    }
    for path in &args.targets {
        let (cfg, pgdata) = config_of_file(path)?;
        out.push(target(cfg, pgdata)?);
    }
    Ok(out)
}

/// Takes a new snapshot of `t`, logging (without secrets) a store that
/// cannot be read.
pub async fn refresh(t: &Target, previous: Option<&Snapshot>) -> Snapshot {
    let (snap, err) = gather(&t.repo, &t.server, t.pgdata.as_ref(), previous).await;
    if let Some(e) = err {
        warn!(
            "metrics: reading {} failed: {}",
            t.repo.describe(),
            redact(&e.to_string(), &t.secrets)
        );
    }
    snap
}

/// The exposition of `snapshots` now.
pub fn render(snapshots: &[Snapshot]) -> String {
    let now = chrono::Utc::now();
    exposition::encode(snapshots.iter().flat_map(|s| samples(s, now)).collect())
}

pub async fn run(args: MetricsArgs, repo_args: &RepoArgs) -> u8 {
    let targets = match targets(&args, repo_args) {
        Ok(t) => t,
        Err(e) => {
            let secrets = repo_args
                .to_config()
                .map(|c| c.secrets())
                .unwrap_or_default();
            error!("metrics: {}", redact(&e.to_string(), &secrets));
            return exit::for_error(e.kind());
        }
    };
    match &args.listen {
        None => {
            let mut snapshots = Vec::new();
            for t in &targets {
                snapshots.push(refresh(t, None).await);
            }
            print!("{}", render(&snapshots));
            exit::OK
        }
        Some(addr) => {
            let interval = Duration::from_secs(args.interval);
            match metrics_server::serve(addr, targets, interval).await {
                Ok(()) => exit::OK,
                Err(e) => {
                    error!("metrics: {e}");
                    exit::FAILED
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pitr::config::RepoLocation;

    #[test]
    fn a_target_config_file_stands_for_flags_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.env");
        std::fs::write(
            &file,
            "PITR_REPO=s3://other-bucket/pg\nPITR_SERVER_NAME=b-main\n\
             PITR_ENDPOINT_URL=https://rgw.example:7443\nPITR_S3_VIRTUAL_HOST_STYLE=true\n\
             PITR_COMPRESSION=none\nS3_ACCESS_KEY_ID=AKB\nS3_SECRET_ACCESS_KEY=sekrit-b\n\
             PITR_PGDATA=/srv/pg/b\n",
        )
        .unwrap();
        let (cfg, pgdata) = config_of_file(&file).unwrap();
        assert_eq!(cfg.server_name, "b-main");
        assert!(matches!(
            &cfg.location,
            RepoLocation::S3 { bucket, prefix } if bucket == "other-bucket" && prefix == "pg"
        ));
        assert_eq!(
            cfg.s3.endpoint_url.as_deref(),
            Some("https://rgw.example:7443")
        );
        assert!(!cfg.s3.path_style);
        assert_eq!(cfg.compression, pitr::codec::Compression::None);
        assert!(cfg.secrets().contains(&"sekrit-b".to_string()));
        assert_eq!(pgdata, Some(PathBuf::from("/srv/pg/b")));

        std::fs::write(&file, "PITR_REPO=s3://x\nPITR_S3_PART_SIZE=1\n").unwrap();
        let err = config_of_file(&file).err().unwrap().to_string();
        assert!(err.contains("b.env"), "{err}");
    }
}
