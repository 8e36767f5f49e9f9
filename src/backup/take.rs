//! Taking a base backup: `BASE_BACKUP` over the replication protocol,
//! each tar streamed through the one data path into the store (no staging
//! disk, bounded memory), Barman's backup.info around it (STARTED, then DONE
//! or FAILED), and DONE only once the WAL from the backup's start to its end
//! is in the archive.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{Local, Utc};
use tracing::warn;

use super::abandoned::close_abandoned;
use super::catalog::{self, BackupDetails, CatalogEntry, ObjectKind, StoredObject};
use super::id::BackupId;
use super::info::{BackupInfo, BackupStatus, Tablespace};
use super::label_capture::Capture;
pub use super::request::{parse_size, BackupRequest, Progress};
use super::stream_upload::store_stream;
use super::wal_check;
use crate::error::{Error, Result};
use crate::pgwire::{BackupEvent, BaseBackupOptions, ConnectParams, ReplicationConnection};
use crate::repo::Repo;
use crate::store::PutOutcome;
use crate::tar_walk::TarWalker;
use crate::transfer::UploadReport;
use crate::wal::{identity, Lsn, SegmentName, TimelineId};

async fn show(conn: &mut ReplicationConnection, setting: &str) -> Result<String> {
    let rows = conn.simple_query(&format!("SHOW {setting}")).await?;
    rows.into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten())
        .ok_or_else(|| Error::Postgres(format!("SHOW {setting} returned nothing")))
}

/// Takes a backup of the server `params` reaches into `repo`, and
/// records its outcome in the Backup state record (`backup::outcome`).
pub async fn take(
    repo: &Repo,
    params: &ConnectParams,
    req: &BackupRequest,
    progress: &dyn Progress,
) -> Result<CatalogEntry> {
    let begin = Utc::now();
    let result = take_backup(repo, params, req, progress).await;
    super::outcome::record(repo, begin, &result).await;
    result
}

async fn take_backup(
    repo: &Repo,
    params: &ConnectParams,
    req: &BackupRequest,
    progress: &dyn Progress,
) -> Result<CatalogEntry> {
    let clock = Instant::now();
    let mut conn = ReplicationConnection::connect(params).await?;
    let system = conn.identify_system().await?;
    let seg_text = show(&mut conn, "wal_segment_size").await?;
    let seg_size = parse_size(&seg_text)
        .ok_or_else(|| Error::Postgres(format!("cannot read wal_segment_size '{seg_text}'")))?;
    let archive_mode = show(&mut conn, "archive_mode").await?;
    if archive_mode == "off" {
        return Err(Error::Config(format!(
            "archive_mode is off on {}: a backup is only usable with the WAL written while it \
             runs, so set archive_mode = on and archive_command = 'pitr wal-push %p' (restart \
             needed), then back up again",
            params.describe()
        )));
    }
    identity::ensure(
        repo,
        system.system_identifier,
        seg_size,
        &format!("the server at {}", params.describe()),
    )
    .await?;

    close_abandoned(repo).await?;
    let mut info = BackupInfo::new(BackupId::from_time(Local::now()), repo.layout.server_name());
    info.backup_name = req.name.clone();
    info.systemid = Some(system.system_identifier.to_string());
    info.version = Some(conn.server_version_num());
    info.xlog_segment_size = Some(seg_size);
    info.pgdata = show(&mut conn, "data_directory").await.ok();
    info.config_file = show(&mut conn, "config_file").await.ok();
    info.hba_file = show(&mut conn, "hba_file").await.ok();
    info.ident_file = show(&mut conn, "ident_file").await.ok();
    info.begin_time = Some(Utc::now().fixed_offset());
    // Two backups in the same second would share an id: never overwrite.
    while catalog::write_info(repo, &info, true).await? == PutOutcome::AlreadyExists {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        info.backup_id = BackupId::from_time(Local::now());
    }

    let names = tablespace_names(params).await;
    let result = stream_backup(repo, &mut conn, &mut info, seg_size, req, progress).await;
    for t in &mut info.tablespaces {
        if let Some(name) = names.get(&t.oid) {
            t.name = name.clone();
        }
    }
    let result = match result {
        Ok(objects) => {
            finish(
                repo,
                &mut info,
                objects,
                seg_size,
                req,
                progress,
                system.system_identifier,
            )
            .await
        }
        Err(e) => Err(e),
    };
    info.end_time.get_or_insert(Utc::now().fixed_offset());
    info.total_time = Some(clock.elapsed().as_secs_f64());
    match result {
        Ok(details) => {
            info.status = BackupStatus::Done;
            crate::fault_point::reached("backup-writing-done-info", info.backup_id.as_str());
            catalog::write_info(repo, &info, false).await?;
            Ok(CatalogEntry {
                info,
                details: Some(details),
            })
        }
        Err(e) => {
            info.status = BackupStatus::Failed;
            info.error = Some(e.to_string());
            // Best effort: the original error matters more than this one.
            let _ = catalog::write_info(repo, &info, false).await;
            Err(e)
        }
    }
}

/// Runs BASE_BACKUP and stores every archive it sends.
async fn stream_backup(
    repo: &Repo,
    conn: &mut ReplicationConnection,
    info: &mut BackupInfo,
    seg_size: u64,
    req: &BackupRequest,
    progress: &dyn Progress,
) -> Result<Vec<StoredObject>> {
    let id = info.backup_id.clone();
    let suffix = repo.codec.compression.suffix();
    if !repo.codec.compression.barman_restores_backups() {
        warn!(
            "backup {id} is compressed with {}: pitr restore reads it, barman-cloud-restore \
             cannot (it reads gzip, bzip2, snappy, lz4 or uncompressed tars); use lz4 or gzip \
             to keep a fallback to Barman's tools",
            repo.codec.compression
        );
    }
    let opts = BaseBackupOptions {
        label: format!("pitr backup {id}"),
        progress: true,
        checkpoint: req.checkpoint,
        manifest: true,
        wait_for_wal_archive: false,
        max_rate: req.max_rate,
    };
    let mut stream = conn.base_backup(&opts).await?;
    let mut objects = Vec::new();
    let mut locations: Vec<(u32, String)> = Vec::new();
    // The server's size estimate of each archive (None: PGDATA's).
    let mut estimates: BTreeMap<Option<u32>, u64> = BTreeMap::new();
    let mut event = stream.next().await?;
    loop {
        match event {
            None => {
                return Err(Error::Postgres(
                    "the server ended the backup stream before it finished".into(),
                ))
            }
            Some(BackupEvent::Started {
                start_lsn,
                timeline,
            }) => {
                set_begin(info, start_lsn, timeline, seg_size);
                event = stream.next().await?;
            }
            Some(BackupEvent::Tablespaces(list)) => {
                progress.total(list.iter().filter_map(|t| t.size_bytes).sum());
                estimates = list
                    .iter()
                    .filter_map(|t| Some((t.oid, t.size_bytes?)))
                    .collect();
                locations = list
                    .iter()
                    .filter_map(|t| Some((t.oid?, t.location.clone()?)))
                    .collect();
                event = stream.next().await?;
            }
            Some(BackupEvent::Archive { name, .. }) => {
                let (kind, oid, key) = if name == "base.tar" {
                    (
                        ObjectKind::Data,
                        None,
                        repo.layout.backup_data_key(&id, suffix),
                    )
                } else {
                    let oid = name
                        .strip_suffix(".tar")
                        .and_then(|o| o.parse::<u32>().ok())
                        .ok_or_else(|| {
                            Error::Postgres(format!(
                                "unexpected archive '{name}' in the backup stream"
                            ))
                        })?;
                    (
                        ObjectKind::Tablespace,
                        Some(oid),
                        repo.layout.backup_tablespace_key(&id, oid, suffix),
                    )
                };
                let mut scanner = TarWalker::new(&key, Capture::new(&["backup_label"]));
                // Room for a database that grows while the backup runs.
                let expected = estimates.get(&oid).map(|b| (b + b / 4) as usize);
                let (report, next) = store_stream(
                    repo,
                    &key,
                    &mut stream,
                    Some(&mut scanner),
                    progress,
                    expected,
                )
                .await?;
                if kind == ObjectKind::Data {
                    info.backup_label = scanner.visitor.text("backup_label");
                }
                objects.push(stored(key, kind, oid, &report));
                event = next;
            }
            Some(BackupEvent::ManifestStart) => {
                let key = repo.layout.backup_manifest_key(&id, suffix);
                let (report, next) =
                    store_stream(repo, &key, &mut stream, None, progress, None).await?;
                objects.push(stored(key, ObjectKind::Manifest, None, &report));
                event = next;
            }
            Some(BackupEvent::Progress(done)) => {
                progress.advance(done);
                event = stream.next().await?;
            }
            Some(BackupEvent::Finished { end_lsn, timeline }) => {
                set_end(info, end_lsn, timeline, seg_size);
                break;
            }
            Some(BackupEvent::Data(_) | BackupEvent::ManifestData(_)) => {
                return Err(Error::Postgres(
                    "the server sent backup data outside an archive".into(),
                ))
            }
        }
    }
    info.tablespaces = locations
        .into_iter()
        .map(|(oid, location)| Tablespace {
            name: oid.to_string(),
            oid,
            location,
        })
        .collect();
    Ok(objects)
}

/// Tablespace names by oid, from an ordinary session (a replication
/// session cannot run SQL). Barman restores relocate tablespaces by name;
/// without access the oid stands in for the name, with a warning.
async fn tablespace_names(params: &ConnectParams) -> BTreeMap<u32, String> {
    let query = async {
        let mut c = ReplicationConnection::connect_sql(params).await?;
        let rows = c
            .simple_query("SELECT oid, spcname FROM pg_catalog.pg_tablespace")
            .await?;
        let _ = c.close().await;
        Ok::<_, Error>(rows)
    };
    match query.await {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|r| Some((r.first()?.as_ref()?.parse().ok()?, r.get(1)?.clone()?)))
            .collect(),
        Err(e) => {
            warn!("cannot read tablespace names ({e}): backup.info names tablespaces by oid");
            BTreeMap::new()
        }
    }
}

fn set_begin(info: &mut BackupInfo, lsn: Lsn, timeline: TimelineId, seg_size: u64) {
    info.begin_xlog = Some(lsn);
    info.timeline = Some(timeline.get());
    info.begin_wal = Some(SegmentName::from_number(
        timeline,
        lsn.segment_number(seg_size),
        seg_size,
    ));
    info.begin_offset = Some(lsn.segment_offset(seg_size));
}

fn set_end(info: &mut BackupInfo, lsn: Lsn, timeline: TimelineId, seg_size: u64) {
    info.end_xlog = Some(lsn);
    info.end_wal = Some(SegmentName::from_number(
        timeline,
        lsn.segment_number(seg_size),
        seg_size,
    ));
    info.end_offset = Some(lsn.segment_offset(seg_size));
    info.end_time = Some(Utc::now().fixed_offset());
}

fn stored(key: String, kind: ObjectKind, oid: Option<u32>, r: &UploadReport) -> StoredObject {
    StoredObject {
        key,
        kind,
        tablespace_oid: oid,
        plain_size: r.plain_size,
        stored_size: r.stored_size,
        sha256: r.sha256.clone(),
    }
}

/// After the stream: wait for the WAL, check the chain, write pitr.json.
async fn finish(
    repo: &Repo,
    info: &mut BackupInfo,
    objects: Vec<StoredObject>,
    seg_size: u64,
    req: &BackupRequest,
    progress: &dyn Progress,
    system_identifier: u64,
) -> Result<BackupDetails> {
    progress.phase("waiting for the backup's WAL to be archived");
    crate::fault_point::reached("backup-waiting-for-wal", info.backup_id.as_str());
    let missing = || Error::Postgres("the server reported no WAL position for the backup".into());
    let begin = info.begin_wal.ok_or_else(missing)?;
    let end = info.end_wal.ok_or_else(missing)?;
    wal_check::wait_for_segment(repo, &end, req.wal_timeout).await?;
    wal_check::require_range(repo, &begin, &end, seg_size).await?;
    info.size = Some(
        objects
            .iter()
            .filter(|o| o.kind.is_tar())
            .map(|o| o.stored_size)
            .sum(),
    );
    let details = BackupDetails {
        pitr_version: env!("CARGO_PKG_VERSION").to_string(),
        system_identifier: system_identifier.to_string(),
        compression: repo.codec.compression.name().to_string(),
        encryption: repo.codec.encryption_name().map(str::to_string),
        objects,
        wal_verified: true,
    };
    catalog::write_details(repo, &info.backup_id, &details).await?;
    Ok(details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_show_sizes() {
        assert_eq!(parse_size("16MB"), Some(16 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("8kB"), Some(8192));
        assert_eq!(parse_size("x"), None);
    }
}
