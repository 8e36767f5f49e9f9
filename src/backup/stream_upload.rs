//! One archive of a BASE_BACKUP stream (a tar, or the manifest) into one
//! object: the stream's data messages feed the upload through a bounded
//! channel, a tar is checked as it passes, and whichever side fails first
//! is the error the user sees.

use std::io;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::label_capture::Capture;
use super::request::Progress;
use crate::error::{Error, Result};
use crate::pgwire::{BackupEvent, BaseBackupStream};
use crate::repo::Repo;
use crate::store::PutOptions;
use crate::tar_walk::TarWalker;
use crate::transfer::channel_io::ChannelReader;
use crate::transfer::{self, UploadReport};

/// Threads a base backup's compression may use: one per core. The
/// replication stream and the upload run on the async runtime beside them.
fn compression_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Streams the data messages of one archive (or the manifest) into `key`,
/// and returns the first event after them.
pub(super) async fn store_stream(
    repo: &Repo,
    key: &str,
    stream: &mut BaseBackupStream<'_>,
    mut scanner: Option<&mut TarWalker<Capture>>,
    progress: &dyn Progress,
    expected_size: Option<usize>,
) -> Result<(UploadReport, Option<BackupEvent>)> {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let upload = transfer::upload_with_workers(
        repo.store.as_ref(),
        key,
        &repo.codec,
        compression_workers(),
        ChannelReader::new(rx),
        PutOptions {
            size_hint: expected_size,
            ..Default::default()
        },
        key,
    );
    let pump = async move {
        let mut streaming = false;
        let failure = loop {
            let event = match stream.next().await {
                Ok(event) => event,
                Err(e) => break e,
            };
            match event {
                Some(BackupEvent::Data(b) | BackupEvent::ManifestData(b)) => {
                    let pieces = match scanner.as_deref_mut() {
                        Some(s) => match s.filter(&b) {
                            Ok(pieces) => pieces,
                            Err(e) => break e,
                        },
                        None => vec![b],
                    };
                    for piece in pieces {
                        if tx.send(Ok(piece)).await.is_err() {
                            // The upload failed: its own error says why.
                            return Err(None);
                        }
                    }
                    if !streaming {
                        streaming = true;
                        crate::fault_point::reached("backup-streaming", key);
                    }
                }
                Some(BackupEvent::Progress(done)) => progress.advance(done),
                // The end of this archive: a tar PostgreSQL cut short fails
                // the backup; otherwise dropping tx completes the object.
                other => match scanner.as_deref_mut().map_or(Ok(()), |s| s.finish()) {
                    Ok(()) => return Ok(other),
                    Err(e) => break e,
                },
            }
        };
        // Make the upload fail rather than store a truncated or malformed object.
        let _ = tx.send(Err(io::Error::other(failure.to_string()))).await;
        Err(Some(failure))
    };
    let (uploaded, next) = tokio::join!(upload, pump);
    match (uploaded, next) {
        (Ok(report), Ok(next)) => Ok((report, next)),
        // The stream failed first: that is the cause, not the aborted upload.
        (_, Err(Some(e))) => Err(e),
        // The upload failed (access denied, a missing bucket, a 5xx): its
        // error is the cause the user must see.
        (Err(e), _) => Err(e),
        (Ok(_), Err(None)) => Err(Error::Store(format!(
            "the upload of {key} ended before the stream did"
        ))),
    }
}
