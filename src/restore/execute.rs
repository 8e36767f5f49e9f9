//! The executor: a plan into a data directory PostgreSQL can start from.
//! Refuses a non-empty target, downloads and extracts every tar with all
//! downloads in flight at once (a large tar with several ranged GETs in
//! flight, see `transfer::ranged`), recreates the tablespaces (moved if asked),
//! and writes recovery.signal and the recovery settings. Every tar must end
//! with its end-of-archive marker and, for a backup pitr took, decode to the
//! SHA-256 and size its pitr.json records. Everything written is fsynced
//! before success; on failure it removes what it wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;
use tracing::{debug, warn};

use super::extract::{ExtractSink, Extractor};
use super::incomplete;
use super::plan::Plan;
use super::target::{Target, TimelineTarget};
use crate::backup::catalog::StoredObject;
use crate::backup::info::BackupInfo;
use crate::backup::take::Progress;
use crate::error::{Error, Result};
use crate::fsutil::fsync_dir;
use crate::layout::BackupFile;
use crate::repo::Repo;
use crate::tar_walk::TarWalker;
use crate::transfer::DownloadReport;

/// Ranged GETs in flight per tar unless told otherwise.
pub const DEFAULT_JOBS: usize = 4;

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
    /// Keep pg_wal in this directory (its own volume) with a symbolic link
    /// from PGDATA, as `initdb --waldir` and `pg_basebackup --waldir` do.
    pub wal_dir: Option<PathBuf>,
    /// Ranged GETs in flight per tar (1: one range at a time). Every tar is
    /// downloaded at once in any case.
    pub jobs: usize,
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
    /// What pitr.json records for it (None for a backup Barman took).
    expected: Option<StoredObject>,
}

/// What extracting one tar wrote.
struct Extracted {
    files: u64,
    /// Directories created or written into.
    dirs: BTreeSet<PathBuf>,
}

/// The last part of an object key: what names an object within its backup.
fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
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

/// Checks a target directory before anything is written: whether it must
/// be emptied first (`--force` on PGDATA, or what an interrupted pitr
/// restore left, see `incomplete`).
fn check_target(dir: &Path, force: bool, what: &str, is_pgdata: bool) -> Result<bool> {
    if dir.join("postmaster.pid").exists() {
        return Err(Error::Config(format!(
            "{what} {} has a postmaster.pid: a server may be running there; stop it first",
            dir.display()
        )));
    }
    let empty =
        is_empty_dir(dir).map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    if empty {
        return Ok(false);
    }
    if incomplete::interrupted(dir, is_pgdata) {
        warn!(
            "{what} {} holds what an interrupted pitr restore left ({}): replacing it",
            dir.display(),
            incomplete::MARKER
        );
        return Ok(true);
    }
    if !force {
        return Err(Error::Config(format!(
            "{what} {} is not empty: restore into an empty or new directory, or pass --force \
             to replace its content",
            dir.display()
        )));
    }
    Ok(true)
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
        let dest = match repo.layout.parse_backup_key(&o.key) {
            Some((_, BackupFile::Data { .. })) => pgdata.to_path_buf(),
            Some((_, BackupFile::Tablespace { oid, .. })) => match tablespaces.get(&oid) {
                Some(dir) => dir.clone(),
                None => continue,
            },
            _ => continue,
        };
        out.push(Job {
            key: o.key,
            dest,
            expected: None,
        });
    }
    if !out.iter().any(|j| j.dest == pgdata) {
        return Err(Error::NotFound(format!(
            "backup {} has no data.tar in {}",
            plan.backup.info.backup_id,
            repo.describe()
        )));
    }
    match &plan.backup.details {
        Some(details) => attach_records(&mut out, &details.objects, &plan.backup.info)?,
        None => debug!(
            "backup {} has no pitr.json (Barman took it): its tars are checked for tar \
             structure (header checksums, end-of-archive marker) only, not against a \
             recorded SHA-256 and size",
            plan.backup.info.backup_id
        ),
    }
    Ok(out)
}

/// Gives each job the SHA-256 and size pitr.json records for its tar, and
/// refuses a tar it does not record or a recorded tar the store lacks.
fn attach_records(jobs: &mut [Job], objects: &[StoredObject], info: &BackupInfo) -> Result<()> {
    let id = &info.backup_id;
    let tars: Vec<&StoredObject> = objects.iter().filter(|o| o.kind.is_tar()).collect();
    for job in jobs.iter_mut() {
        let name = file_name(&job.key);
        let recorded = tars
            .iter()
            .find(|o| file_name(&o.key) == name)
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "{} is in backup {id}, but the backup's pitr.json does not record it: the \
                 backup directory holds an object pitr did not write; remove it or restore \
                 another backup",
                    job.key
                ))
            })?;
        job.expected = Some((*recorded).clone());
    }
    for o in tars {
        let name = file_name(&o.key);
        let wanted = match o.tablespace_oid {
            Some(oid) => info.tablespaces.iter().any(|t| t.oid == oid),
            None => true,
        };
        if wanted && !jobs.iter().any(|j| file_name(&j.key) == name) {
            return Err(Error::NotFound(format!(
                "backup {id} records {} in its pitr.json, but the store does not hold it: the \
                 backup is incomplete; restore another backup",
                o.key
            )));
        }
    }
    Ok(())
}

/// Compares what a tar decoded to with what pitr.json records for it.
fn check_recorded(key: &str, want: &StoredObject, got: &DownloadReport) -> Result<()> {
    if got.sha256.eq_ignore_ascii_case(&want.sha256) && got.size == want.plain_size {
        return Ok(());
    }
    Err(Error::Corrupt(format!(
        "{key} decodes to {} bytes with SHA-256 {}, but the backup's pitr.json records {} bytes \
         with SHA-256 {}: the object is damaged or was replaced in the store; restore another \
         backup (pitr backup list)",
        got.size, got.sha256, want.plain_size, want.sha256
    )))
}

async fn extract_one(
    repo: &Repo,
    job: &Job,
    ranged_jobs: usize,
    into_pgdata: bool,
    bytes: Arc<AtomicU64>,
) -> Result<Extracted> {
    let vanished = || Error::NotFound(format!("{} vanished from the store", job.key));
    let mut extractor = Extractor::new(&job.dest, &job.key, bytes);
    if into_pgdata {
        // PostgreSQL refuses a PGDATA without PG_VERSION: until the restore
        // is complete, nobody can start a server on what is there.
        extractor = extractor.writing_as("PG_VERSION", incomplete::HELD_BACK);
    }
    let sink = ExtractSink {
        walker: TarWalker::new(&job.key, extractor),
    };
    // Always in ranges (one at a time with --jobs 1): a range that fails
    // half way is fetched again, where a failed single GET failed the restore.
    let (report, mut sink) = repo
        .decode_backup_object(&job.key, ranged_jobs, sink)
        .await?
        .ok_or_else(vanished)?;
    sink.finish()?;
    if let Some(want) = &job.expected {
        check_recorded(&job.key, want, &report)?;
    }
    let extractor = sink.walker.visitor;
    Ok(Extracted {
        files: extractor.files,
        dirs: extractor.dirs,
    })
}

/// Writes a small file and fsyncs it.
fn write_synced(path: &Path, content: &[u8]) -> Result<()> {
    let write = || -> io::Result<()> {
        let mut f = fs::File::create(path)?;
        io::Write::write_all(&mut f, content)?;
        f.sync_all()
    };
    write().map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

/// fsyncs every directory in `dirs`, on a blocking thread.
async fn sync_dirs(dirs: BTreeSet<PathBuf>) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        for d in &dirs {
            fsync_dir(d).map_err(|e| Error::io(format!("cannot fsync {}", d.display()), e))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::Io {
        context: "the directory fsync thread failed".into(),
        source: io::Error::other(e),
    })?
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
    let mut replace = Vec::new();
    if check_target(&req.pgdata, req.force, "PGDATA", true)? {
        replace.push(req.pgdata.clone());
    }
    // --force never empties a tablespace directory: without --tablespace-map
    // it is the original location, which may belong to a live server.
    for (oid, dir) in &tablespaces {
        let what = format!("the directory of tablespace {oid}");
        let emptied = check_target(dir, false, &what, false).map_err(|e| {
            Error::Config(format!(
                "{e}; --tablespace-map {oid}=/new/dir puts it elsewhere"
            ))
        })?;
        if emptied {
            replace.push(dir.clone());
        }
    }
    if let Some(wal_dir) = &req.wal_dir {
        if check_target(wal_dir, false, "the WAL directory (--waldir)", false)? {
            replace.push(wal_dir.clone());
        }
        if !wal_dir.is_absolute() {
            return Err(Error::Config(format!(
                "the WAL directory {} (--waldir) must be an absolute path",
                wal_dir.display()
            )));
        }
    }
    let jobs = jobs(repo, plan, &tablespaces, &req.pgdata).await?;

    let dirs: Vec<PathBuf> = std::iter::once(req.pgdata.clone())
        .chain(tablespaces.values().cloned())
        .chain(req.wal_dir.clone())
        .collect();
    let result = restore_into(repo, plan, req, &jobs, &tablespaces, &replace, progress).await;
    result.map_err(|e| {
        // Leave nothing half-restored behind, and say so.
        for d in &dirs {
            let _ = empty_dir(d);
        }
        e.with_note(&format!(
            "the restore into {} was undone (nothing half-restored is left): run the restore \
             again once the cause is fixed",
            req.pgdata.display()
        ))
    })
}

async fn restore_into(
    repo: &Repo,
    plan: &Plan,
    req: &ExecuteRequest,
    jobs: &[Job],
    tablespaces: &BTreeMap<u32, PathBuf>,
    replace: &[PathBuf],
    progress: &dyn Progress,
) -> Result<ExecuteReport> {
    let pgdata = &req.pgdata;
    let backup_id = plan.backup.info.backup_id.to_string();
    for d in replace {
        empty_dir(d).map_err(|e| Error::io(format!("cannot empty {}", d.display()), e))?;
    }
    // Directories to fsync at the end: those made or written into, and the
    // parents of the target directories this restore creates.
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for d in std::iter::once(pgdata).chain(tablespaces.values()) {
        if !d.exists() {
            if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                dirs.insert(parent.to_path_buf());
            }
        }
        fs::create_dir_all(d)
            .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
        dirs.insert(d.to_path_buf());
        fs::set_permissions(d, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("cannot chmod {}", d.display()), e))?;
        incomplete::mark(d, &backup_id, pgdata)?;
    }
    if let Some(d) = &plan.backup.details {
        progress.total(
            d.objects
                .iter()
                .filter(|o| o.kind.is_tar())
                .map(|o| o.plain_size)
                .sum(),
        );
    }
    let bytes = Arc::new(AtomicU64::new(0));
    let downloads = try_join_all(
        jobs.iter()
            .map(|j| extract_one(repo, j, req.jobs, j.dest == *pgdata, bytes.clone())),
    );
    let ticker = async {
        loop {
            progress.advance(bytes.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let extracted = tokio::select! {
        r = downloads => r?,
        _ = ticker => unreachable!("the ticker never ends"),
    };
    let mut files = 0;
    for e in extracted {
        files += e.files;
        dirs.extend(e.dirs);
    }
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
    let pg_wal = match &req.wal_dir {
        Some(wal_dir) => move_wal_dir(pgdata, wal_dir, &backup_id)?,
        None => pgdata.join("pg_wal"),
    };
    let status = pg_wal.join("archive_status");
    fs::create_dir_all(&status)
        .map_err(|e| Error::io(format!("cannot create {}", status.display()), e))?;
    dirs.extend([tblspc, pg_wal, status]);
    for stale in ["postmaster.pid", "standby.signal", "tablespace_map"] {
        let _ = fs::remove_file(pgdata.join(stale));
    }
    crate::fault_point::reached(
        "restore-writing-recovery-settings",
        &pgdata.display().to_string(),
    );
    write_synced(&pgdata.join("recovery.signal"), b"")?;
    let settings_file = pgdata.join("postgresql.auto.conf");
    if let Some(restore_command) = &req.restore_command {
        let mut conf = fs::read_to_string(&settings_file).unwrap_or_default();
        if !conf.is_empty() && !conf.ends_with('\n') {
            conf.push('\n');
        }
        conf.push_str(&recovery_settings(plan, restore_command, req.timeline));
        write_synced(&settings_file, conf.as_bytes())?;
    }
    sync_dirs(dirs).await?;
    let others: Vec<PathBuf> = tablespaces
        .values()
        .cloned()
        .chain(req.wal_dir.clone())
        .collect();
    incomplete::complete(pgdata, &others)?;
    Ok(ExecuteReport {
        files,
        bytes: bytes.load(Ordering::Relaxed),
        tablespaces: tablespaces.iter().map(|(o, d)| (*o, d.clone())).collect(),
        settings_file,
    })
}

/// Moves what the backup put in `PGDATA/pg_wal` into `wal_dir` and leaves a
/// symbolic link in its place. Returns the directory that now holds the WAL.
fn move_wal_dir(pgdata: &Path, wal_dir: &Path, backup_id: &str) -> Result<PathBuf> {
    let io = |what: &str, p: &Path, e| Error::io(format!("cannot {what} {}", p.display()), e);
    fs::create_dir_all(wal_dir).map_err(|e| io("create", wal_dir, e))?;
    fs::set_permissions(wal_dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| io("chmod", wal_dir, e))?;
    incomplete::mark(wal_dir, backup_id, pgdata)?;
    let inside = pgdata.join("pg_wal");
    if let Ok(entries) = fs::read_dir(&inside) {
        for entry in entries {
            let entry = entry.map_err(|e| io("read", &inside, e))?;
            let to = wal_dir.join(entry.file_name());
            fs::rename(entry.path(), &to).map_err(|e| io("move WAL into", &to, e))?;
        }
        fs::remove_dir(&inside).map_err(|e| io("remove", &inside, e))?;
    }
    symlink(wal_dir, &inside).map_err(|e| io("link", &inside, e))?;
    Ok(wal_dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::info::Tablespace;

    fn recorded(file: &str, oid: Option<u32>) -> StoredObject {
        StoredObject {
            key: format!("pg/main/base/20260101T000000/{file}"),
            kind: if oid.is_some() {
                crate::backup::catalog::ObjectKind::Tablespace
            } else {
                crate::backup::catalog::ObjectKind::Data
            },
            tablespace_oid: oid,
            plain_size: 10,
            stored_size: 10,
            sha256: "ab".repeat(32),
        }
    }

    fn job(file: &str) -> Job {
        Job {
            key: format!("pg/main/base/20260101T000000/{file}"),
            dest: PathBuf::from("/x"),
            expected: None,
        }
    }

    fn info() -> BackupInfo {
        let mut info = BackupInfo::new("20260101T000000".parse().unwrap(), "main");
        info.tablespaces.push(Tablespace {
            name: "ts".into(),
            oid: 16384,
            location: "/ts".into(),
        });
        info
    }

    #[test]
    fn every_tar_gets_its_record_and_strays_or_gaps_are_refused() {
        let objects = [
            recorded("data.tar", None),
            recorded("16384.tar", Some(16384)),
        ];
        let mut jobs = [job("data.tar"), job("16384.tar")];
        attach_records(&mut jobs, &objects, &info()).unwrap();
        assert_eq!(jobs[0].expected.as_ref(), Some(&objects[0]));
        assert_eq!(jobs[1].expected.as_ref(), Some(&objects[1]));

        let mut stray = [job("data.tar"), job("data_0002.tar")];
        let e = attach_records(&mut stray, &objects[..1], &info()).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt);
        assert!(e.to_string().contains("data_0002.tar is in backup"), "{e}");

        let mut missing = [job("data.tar")];
        let e = attach_records(&mut missing, &objects, &info()).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::NotFound);
        assert!(e.to_string().contains("16384.tar in its pitr.json"), "{e}");
    }

    #[test]
    fn a_tar_must_decode_to_its_recorded_sha256_and_size() {
        let want = recorded("data.tar", None);
        let report = |sha256: &str, size| DownloadReport {
            info: crate::store::ObjectInfo {
                key: want.key.clone(),
                size: 10,
                last_modified: None,
                metadata: Default::default(),
            },
            sha256: sha256.into(),
            size,
            checksum_verified: false,
            encrypted: false,
        };
        check_recorded(&want.key, &want, &report(&"AB".repeat(32), 10)).unwrap();
        for (sha, size) in [("cd".repeat(32), 10), ("ab".repeat(32), 9)] {
            let e = check_recorded(&want.key, &want, &report(&sha, size)).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt);
            let msg = e.to_string();
            assert!(
                msg.contains(&want.key)
                    && msg.contains(&format!("decodes to {size} bytes with SHA-256 {sha}"))
                    && msg.contains("records 10 bytes"),
                "{msg}"
            );
        }
    }
}
