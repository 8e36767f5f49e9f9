//! Upload: read a source, compress, encrypt, and store it under one key.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::channel_io::{ChannelWriter, CHUNK, DEPTH};
use super::meta;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::store::{Metadata, ObjectStore, PutOptions, PutOutcome};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadReport {
    pub outcome: PutOutcome,
    /// Hex SHA-256 of the source.
    pub sha256: String,
    pub plain_size: u64,
    pub stored_size: u64,
}

/// Streams `source` through `codec` into `key`. `what` names the source in
/// errors. The object gets pitr's metadata (checksum, size, encoding).
pub async fn upload<R: Read + Send + 'static>(
    store: &dyn ObjectStore,
    key: &str,
    codec: &Codec,
    source: R,
    opts: PutOptions,
    what: &str,
) -> Result<UploadReport> {
    upload_with_workers(store, key, codec, 1, source, opts, what).await
}

/// [`upload`], compressing on up to `workers` threads where the
/// compression allows it (see [`Codec::encoder_with_workers`]): for base
/// backups, whose compression would otherwise be capped by one core.
pub async fn upload_with_workers<R: Read + Send + 'static>(
    store: &dyn ObjectStore,
    key: &str,
    codec: &Codec,
    workers: usize,
    source: R,
    mut opts: PutOptions,
    what: &str,
) -> Result<UploadReport> {
    opts.metadata
        .insert(meta::COMPRESSION.into(), codec.compression.name().into());
    if let Some(enc) = codec.encryption_name() {
        opts.metadata.insert(meta::ENCRYPTION.into(), enc.into());
    }
    let (tx, mut rx) = mpsc::channel(DEPTH);
    let codec = codec.clone();
    let source_name = what.to_string();
    let encoding =
        tokio::task::spawn_blocking(move || encode(source, &codec, workers, tx, &source_name));

    let mut writer = store.writer(key, opts).await?;
    let mut send_error = None;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = writer.write(chunk).await {
            send_error = Some(e);
            break;
        }
    }
    drop(rx); // stops the encoder if we bailed out early
    let encoded = encoding
        .await
        .map_err(|e| Error::Store(format!("encoder thread failed: {e}")));
    let result = match send_error {
        Some(e) => Err(e),
        None => encoded.and_then(|r| r),
    };
    let (sha256, plain_size, stored_size) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = writer.abort().await;
            return Err(e);
        }
    };
    let outcome = writer.finish(late_metadata(&sha256, plain_size)).await?;
    Ok(UploadReport {
        outcome,
        sha256,
        plain_size,
        stored_size,
    })
}

/// Runs on a blocking thread: reads the source, hashes it, encodes it into
/// the channel. Returns (sha256 hex, source size, encoded size).
fn encode<R: Read>(
    mut source: R,
    codec: &Codec,
    workers: usize,
    tx: mpsc::Sender<bytes::Bytes>,
    what: &str,
) -> Result<(String, u64, u64)> {
    let mut encoder = codec
        .encoder_with_workers(ChannelWriter::new(tx), workers)
        .map_err(|e| Error::io(format!("cannot start encoding {what}"), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from_pipeline(&format!("cannot read {what}"), e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
        encoder
            .write_all(&buf[..n])
            .map_err(|e| Error::from_pipeline(&format!("cannot encode {what}"), e))?;
    }
    let mut sink = encoder
        .finish()
        .map_err(|e| Error::from_pipeline(&format!("cannot encode {what}"), e))?;
    sink.flush()
        .map_err(|e| Error::from_pipeline(&format!("cannot encode {what}"), e))?;
    Ok((hex::encode(hasher.finalize()), size, sink.written))
}

fn late_metadata(sha256: &str, size: u64) -> Metadata {
    [
        (meta::SHA256.to_string(), sha256.to_string()),
        (meta::SIZE.to_string(), size.to_string()),
    ]
    .into()
}
