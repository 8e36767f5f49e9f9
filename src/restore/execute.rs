//! The executor: a plan into a data directory PostgreSQL can start from.
//! Refuses a non-empty target, downloads and extracts every tar with all
//! downloads in flight at once, recreates the tablespaces (moved if asked),
//! and writes recovery.signal and the recovery settings. On failure it
//! removes what it wrote.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;

use super::extract::{ExtractSink, Extractor};
use super::plan::Plan;
use super::target::{Target, TimelineTarget};
use crate::backup::take::Progress;
use crate::codec::Compression;
use crate::error::{Error, Result};
use crate::repo::Repo;
use crate::tar_walk::TarWalker;
use crate::transfer;

#[derive(Debug, Clone)]
pub struct ExecuteRequest {
    pub pgdata: PathBuf,
    /// Replace the content of a non-empty PGDATA (never of a tablespace directory).
    pub force: bool,
    /// Tablespace oid -> directory, instead of the original location.
    pub tablespace_map: BTreeMap<u32, PathBuf>,
    /// The restore_command to write with the recovery settings into
    /// postgresql.auto.conf (calls pitr wal-fetch with this repository).
    /// `None` writes no settings, only recovery.signal: for a caller that
    /// configures recovery itself (CloudNativePG's instance manager).
    pub restore_command: Option<String>,
    pub timeline: TimelineTarget,
}

#[derive(Debug, Clone)]
pub struct ExecuteReport {
    pub files: u64,
    pub bytes: u64,
    pub tablespaces: Vec<(u32, PathBuf)>,
    pub settings_file: PathBuf,
}

/// One tar of the backup and where it goes.
struct Job {
    key: String,
    dest: PathBuf,
}

fn is_empty_dir(path: &Path) -> io::Result<bool> {
    match fs::read_dir(path) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

fn empty_dir(path: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let p = entry?.path();
        match fs::symlink_metadata(&p)?.is_dir() {
            true => fs::remove_dir_all(&p)?,
            false => fs::remove_file(&p)?,
        }
    }
    Ok(())
}

/// Checks a target directory before anything is written.
fn check_target(dir: &Path, force: bool, what: &str) -> Result<()> {
    if dir.join("postmaster.pid").exists() {
        return Err(Error::Config(format!(
            "{what} {} has a postmaster.pid: a server may be running there; stop it first",
            dir.display()
        )));
    }
    let empty =
        is_empty_dir(dir).map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    if !empty && !force {
        return Err(Error::Config(format!(
            "{what} {} is not empty: restore into an empty or new directory, or pass --force \
             to replace its content",
            dir.display()
        )));
    }
    Ok(())
}

/// Which tar goes where: PGDATA's (`data.tar*`, and Barman's `data_0001.tar*`
/// parts) into PGDATA, `<oid>.tar*` into each tablespace's directory.
async fn jobs(
    repo: &Repo,
    plan: &Plan,
    tablespaces: &BTreeMap<u32, PathBuf>,
    pgdata: &Path,
) -> Result<Vec<Job>> {
    let prefix = repo.layout.backup_prefix(&plan.backup.info.backup_id);
    let mut out = Vec::new();
    for o in repo.store.list(&prefix).await? {
        let Some(file) = o.key.strip_prefix(&prefix) else {
            continue;
        };
        let Some((stem, _)) = file.split_once(".tar") else {
            continue;
        };
        let base = stem.split('_').next().unwrap_or(stem);
        let dest = if base == "data" {
            pgdata.to_path_buf()
        } else if let Some(dir) = base
            .parse::<u32>()
            .ok()
            .and_then(|oid| tablespaces.get(&oid))
        {
            dir.clone()
        } else {
            continue;
        };
        out.push(Job { key: o.key, dest });
    }
    if !out.iter().any(|j| j.dest == pgdata) {
        return Err(Error::NotFound(format!(
            "backup {} has no data.tar in {}",
            plan.backup.info.backup_id,
            repo.describe()
        )));
    }
    Ok(out)
}

async fn extract_one(repo: &Repo, job: &Job, bytes: Arc<AtomicU64>) -> Result<u64> {
    let obj = repo
        .store
        .get(&job.key)
        .await?
        .ok_or_else(|| Error::NotFound(format!("{} vanished from the store", job.key)))?;
    let suffix = job.key.rsplit_once(".tar").map(|(_, s)| s).unwrap_or("");
    let compression = Compression::for_suffix(suffix, &job.key)?;
    let sink = ExtractSink {
        walker: TarWalker::new(Extractor::new(&job.dest, &job.key, bytes)),
    };
    let (_, sink) = transfer::download(obj, compression, repo.codec.key.clone(), sink).await?;
    if let Some(member) = &sink.walker.current {
        return Err(Error::Corrupt(format!(
            "{} ends inside member {member}: the tar is truncated",
            job.key
        )));
    }
    Ok(sink.walker.visitor.files)
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// The recovery settings appended to postgresql.auto.conf (later lines win).
pub fn recovery_settings(plan: &Plan, restore_command: &str, timeline: TimelineTarget) -> String {
    let mut lines = vec![
        format!(
            "# Recovery settings written by pitr restore at {} for backup {}",
            chrono::Utc::now().to_rfc3339(),
            plan.backup.info.backup_id
        ),
        format!("restore_command = {}", quote(restore_command)),
    ];
    let tli = match timeline {
        TimelineTarget::Latest => "latest".to_string(),
        TimelineTarget::Current => "current".to_string(),
        TimelineTarget::Id(t) => t.get().to_string(),
    };
    lines.push(format!("recovery_target_timeline = {}", quote(&tli)));
    for (k, v) in plan.target.settings() {
        lines.push(format!("{k} = {}", quote(&v)));
    }
    if plan.target != Target::Latest {
        if plan.exclusive
            && matches!(
                plan.target,
                Target::Time { .. } | Target::Lsn { .. } | Target::Xid { .. }
            )
        {
            lines.push("recovery_target_inclusive = 'off'".into());
        }
        lines.push(format!(
            "recovery_target_action = {}",
            quote(plan.action.as_str())
        ));
    }
    lines.join("\n") + "\n"
}

/// Restores `plan` into `req.pgdata`.
pub async fn execute(
    repo: &Repo,
    plan: &Plan,
    req: &ExecuteRequest,
    progress: &dyn Progress,
) -> Result<ExecuteReport> {
    let tablespaces: BTreeMap<u32, PathBuf> = plan
        .backup
        .info
        .tablespaces
        .iter()
        .map(|t| {
            let dir = req
                .tablespace_map
                .get(&t.oid)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(&t.location));
            (t.oid, dir)
        })
        .collect();
    if let Some(oid) = req
        .tablespace_map
        .keys()
        .find(|o| !tablespaces.contains_key(o))
    {
        return Err(Error::Config(format!(
            "--tablespace-map {oid}=...: backup {} has no tablespace {oid} (it has: {})",
            plan.backup.info.backup_id,
            tablespaces
                .keys()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    check_target(&req.pgdata, req.force, "PGDATA")?;
    // --force never empties a tablespace directory: without --tablespace-map
    // it is the original location, which may belong to a live server.
    for (oid, dir) in &tablespaces {
        check_target(dir, false, &format!("the directory of tablespace {oid}")).map_err(|e| {
            Error::Config(format!(
                "{e}; --tablespace-map {oid}=/new/dir puts it elsewhere"
            ))
        })?;
    }
    let jobs = jobs(repo, plan, &tablespaces, &req.pgdata).await?;

    let dirs: Vec<PathBuf> = std::iter::once(req.pgdata.clone())
        .chain(tablespaces.values().cloned())
        .collect();
    let result = restore_into(repo, plan, req, &jobs, &tablespaces, progress).await;
    if result.is_err() {
        // Leave nothing half-restored behind.
        for d in &dirs {
            let _ = empty_dir(d);
        }
    }
    result
}

async fn restore_into(
    repo: &Repo,
    plan: &Plan,
    req: &ExecuteRequest,
    jobs: &[Job],
    tablespaces: &BTreeMap<u32, PathBuf>,
    progress: &dyn Progress,
) -> Result<ExecuteReport> {
    let pgdata = &req.pgdata;
    if req.force {
        empty_dir(pgdata)
            .map_err(|e| Error::io(format!("cannot empty {}", pgdata.display()), e))?;
    }
    for d in std::iter::once(pgdata).chain(tablespaces.values()) {
        fs::create_dir_all(d)
            .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
        fs::set_permissions(d, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("cannot chmod {}", d.display()), e))?;
    }
    if let Some(d) = &plan.backup.details {
        progress.total(
            d.objects
                .iter()
                .filter(|o| o.kind != "manifest")
                .map(|o| o.plain_size)
                .sum(),
        );
    }
    let bytes = Arc::new(AtomicU64::new(0));
    let downloads = try_join_all(jobs.iter().map(|j| extract_one(repo, j, bytes.clone())));
    let ticker = async {
        loop {
            progress.advance(bytes.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let files: u64 = tokio::select! {
        r = downloads => r?.into_iter().sum(),
        _ = ticker => unreachable!("the ticker never ends"),
    };
    progress.advance(bytes.load(Ordering::Relaxed));

    // Tablespace links, where restores (not the tar) make them.
    let tblspc = pgdata.join("pg_tblspc");
    fs::create_dir_all(&tblspc)
        .map_err(|e| Error::io(format!("cannot create {}", tblspc.display()), e))?;
    for (oid, dir) in tablespaces {
        let link = tblspc.join(oid.to_string());
        let _ = fs::remove_file(&link);
        symlink(dir, &link).map_err(|e| Error::io(format!("cannot link {}", link.display()), e))?;
    }
    let status = pgdata.join("pg_wal/archive_status");
    fs::create_dir_all(&status)
        .map_err(|e| Error::io(format!("cannot create {}", status.display()), e))?;
    for stale in ["postmaster.pid", "standby.signal", "tablespace_map"] {
        let _ = fs::remove_file(pgdata.join(stale));
    }
    let signal = pgdata.join("recovery.signal");
    fs::write(&signal, "")
        .map_err(|e| Error::io(format!("cannot write {}", signal.display()), e))?;
    let settings_file = pgdata.join("postgresql.auto.conf");
    if let Some(restore_command) = &req.restore_command {
        let mut conf = fs::read_to_string(&settings_file).unwrap_or_default();
        if !conf.is_empty() && !conf.ends_with('\n') {
            conf.push('\n');
        }
        conf.push_str(&recovery_settings(plan, restore_command, req.timeline));
        fs::write(&settings_file, conf)
            .map_err(|e| Error::io(format!("cannot write {}", settings_file.display()), e))?;
    }
    Ok(ExecuteReport {
        files,
        bytes: bytes.load(Ordering::Relaxed),
        tablespaces: tablespaces.iter().map(|(o, d)| (*o, d.clone())).collect(),
        settings_file,
    })
}
