//! Download: fetch an object, decrypt, decompress, verify, write to a sink.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::BytesMut;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::channel_io::{ChannelReader, CHUNK, DEPTH};
use super::meta;
use crate::codec::{self, Compression, EncryptionKey};
use crate::error::{Error, Result};
use crate::store::{Object, ObjectInfo};

#[derive(Debug, Clone)]
pub struct DownloadReport {
    pub info: ObjectInfo,
    /// Hex SHA-256 of the decoded content.
    pub sha256: String,
    pub size: u64,
    /// True when the object carried pitr's checksum and it matched.
    pub checksum_verified: bool,
    /// True when the object was stored with pitr's client-side encryption.
    pub encrypted: bool,
}

/// Decodes `object` into `sink` and checks it against the checksum and size
/// pitr stored with it (if any). Returns the sink so the caller can fsync it.
pub async fn download<W: Write + Send + 'static>(
    object: Object,
    compression: Compression,
    key: Option<Arc<EncryptionKey>>,
    sink: W,
) -> Result<(DownloadReport, W)> {
    let Object { info, mut body } = object;
    let what = info.key.clone();
    let (tx, rx) = mpsc::channel::<io::Result<bytes::Bytes>>(DEPTH);
    let name = what.clone();
    let decoding =
        tokio::task::spawn_blocking(move || decode(rx, compression, key.as_deref(), sink, &name));

    loop {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let read = body.read_buf(&mut buf).await;
        let item = match read {
            Ok(0) => break,
            Ok(_) => Ok(buf.freeze()),
            Err(e) => Err(io::Error::other(Error::Store(format!(
                "reading {what} from the store failed: {}",
                crate::error::with_causes(&e)
            )))),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            break; // the decoder stopped (it will report why), or we did
        }
    }
    drop(tx);
    let (sha256, size, encrypted, sink) = decoding
        .await
        .map_err(|e| Error::Store(format!("decoder thread failed: {e}")))??;

    let mut checksum_verified = false;
    if let Some(expected) = info.metadata.get(meta::SHA256) {
        if !expected.eq_ignore_ascii_case(&sha256) {
            return Err(Error::Corrupt(format!(
                "{what} decodes to content with SHA-256 {sha256}, but it was stored with {expected}: \
                 the object is damaged"
            )));
        }
        checksum_verified = true;
    }
    if let Some(expected) = info
        .metadata
        .get(meta::SIZE)
        .and_then(|s| s.parse::<u64>().ok())
    {
        if expected != size {
            return Err(Error::Corrupt(format!(
                "{what} decodes to {size} bytes, but {expected} were stored: the object is damaged"
            )));
        }
    }
    Ok((
        DownloadReport {
            info,
            sha256,
            size,
            checksum_verified,
            encrypted,
        },
        sink,
    ))
}

fn decode<W: Write>(
    rx: mpsc::Receiver<io::Result<bytes::Bytes>>,
    compression: Compression,
    key: Option<&EncryptionKey>,
    mut sink: W,
    what: &str,
) -> Result<(String, u64, bool, W)> {
    let context = format!("cannot decode {what}");
    let (mut reader, encrypted) =
        codec::decoder_reporting(ChannelReader::new(rx), compression, key, what)
            .map_err(|e| Error::from_pipeline(&context, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from_pipeline(&context, e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
        sink.write_all(&buf[..n])
            .map_err(|e| Error::from_pipeline("cannot write the decoded data", e))?;
    }
    Ok((hex::encode(hasher.finalize()), size, encrypted, sink))
}
