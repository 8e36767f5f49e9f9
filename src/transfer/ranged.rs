//! Ranged parallel download: one large object (a base backup's tar) read
//! with several ranged GETs in flight, handed on in order as one body, so
//! the decoder and the tar extractor see the same stream as from one GET.
//!
//! Memory is bounded: at most `jobs` ranges of [`RANGE_SIZE`] are being
//! fetched or waiting their turn, plus one in the hand-over channel and
//! one being decoded, so about `(jobs + 2) * RANGE_SIZE` per object. A
//! range whose transfer fails is fetched again (up to [`ATTEMPTS`] times),
//! which one long GET cannot do. Every range must come from the same
//! version of the object (the same ETag): an object replaced during the
//! download is an error, never a mix of two objects.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::StreamExt;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use crate::error::{Error, ErrorKind, Result};
use crate::store::{Object, ObjectInfo, ObjectStore, RangeBytes};

/// Bytes per ranged GET.
pub const RANGE_SIZE: u64 = 8 << 20;
/// Tries per range before the download fails.
pub const ATTEMPTS: u32 = 3;

/// `info`'s object as an [`Object`] whose body is fed by ranged GETs, and
/// the future that feeds it: poll both together (`tokio::join!`). The feed
/// ends early, without error, when the reader stops reading; a failure
/// reaches the reader as a read error and is also the feed's result.
pub fn open<'a>(
    store: &'a dyn ObjectStore,
    info: ObjectInfo,
    jobs: usize,
    range_size: u64,
) -> (Object, impl Future<Output = Result<()>> + 'a) {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(1);
    let key = info.key.clone();
    let size = info.size;
    let feed = async move {
        let result = feed(store, &key, size, jobs, range_size, &tx).await;
        if let Err(e) = &result {
            let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
        }
        result
    };
    let body = ChannelBody {
        rx,
        current: Bytes::new(),
    };
    (
        Object {
            info,
            body: Box::pin(body),
        },
        feed,
    )
}

async fn feed(
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
    jobs: usize,
    range_size: u64,
    tx: &mpsc::Sender<io::Result<Bytes>>,
) -> Result<()> {
    let ranges = (0..size.div_ceil(range_size))
        .map(|i| (i * range_size, range_size.min(size - i * range_size)));
    let mut chunks = futures::stream::iter(ranges)
        .map(|(start, len)| fetch(store, key, start, len))
        .buffered(jobs.max(1));
    let mut first_version: Option<Option<String>> = None;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        match &first_version {
            None => first_version = Some(chunk.version.clone()),
            Some(v) if *v != chunk.version => {
                return Err(Error::Corrupt(format!(
                    "{key} was replaced in the store while it was being downloaded \
                     (version {} became {}): run the command again",
                    v.as_deref().unwrap_or("-"),
                    chunk.version.as_deref().unwrap_or("-")
                )))
            }
            Some(_) => {}
        }
        if tx.send(Ok(chunk.bytes)).await.is_err() {
            return Ok(()); // the reader stopped; it says why
        }
    }
    Ok(())
}

/// One range, fetched again when its transfer fails.
async fn fetch(store: &dyn ObjectStore, key: &str, start: u64, len: u64) -> Result<RangeBytes> {
    let mut attempt = 1;
    loop {
        let result = match store.get_range(key, start, len).await {
            Ok(Some(r)) if r.bytes.len() as u64 == len => Ok(r),
            Ok(Some(r)) => Err(Error::Store(format!(
                "{key}: bytes {start}+{len} came back as {} bytes",
                r.bytes.len()
            ))),
            Ok(None) => {
                return Err(Error::NotFound(format!(
                    "{key} vanished from the store while it was being downloaded"
                )))
            }
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.kind() == ErrorKind::Store && attempt < ATTEMPTS => {
                tracing::warn!("{e} (attempt {attempt} of {ATTEMPTS}); fetching the range again");
                tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The receiving end, as an `AsyncRead`.
struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl AsyncRead for ChannelBody {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => self.current = b,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.current.len().min(buf.remaining());
        buf.put_slice(&self.current[..n]);
        self.current.advance(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fs::FsStore;
    use crate::store::PutOptions;
    use tokio::io::AsyncReadExt;

    async fn stored(dir: &std::path::Path, data: &[u8]) -> (FsStore, ObjectInfo) {
        let store = FsStore::create(dir).unwrap();
        store
            .put("k/obj", Bytes::copy_from_slice(data), PutOptions::default())
            .await
            .unwrap();
        let info = store.head("k/obj").await.unwrap().unwrap();
        (store, info)
    }

    #[tokio::test]
    async fn ranges_arrive_in_order_whatever_the_sizes() {
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let (store, info) = stored(dir.path(), &data).await;
        for (jobs, range) in [
            (1, 1 << 20),
            (4, 65_536),
            (8, 999_999),
            (3, 1_000_003),
            (2, 7),
        ] {
            if range == 7 && data.len() > 100_000 {
                continue; // 140k requests: covered below with a small object
            }
            let (mut obj, feed) = open(&store, info.clone(), jobs, range);
            let mut got = Vec::new();
            let (read, fed) = tokio::join!(obj.body.read_to_end(&mut got), feed);
            read.unwrap();
            fed.unwrap();
            assert!(got == data, "jobs {jobs}, range {range}");
        }
        let small = b"0123456789abcdefghij";
        let (store, info) = stored(&dir.path().join("small"), small).await;
        let (mut obj, feed) = open(&store, info, 3, 7);
        let mut got = Vec::new();
        let (read, fed) = tokio::join!(obj.body.read_to_end(&mut got), feed);
        read.unwrap();
        fed.unwrap();
        assert_eq!(got, small);
    }

    #[tokio::test]
    async fn an_object_replaced_or_removed_midway_is_an_error_not_a_mix() {
        let data = vec![1u8; 300_000];
        let dir = tempfile::tempdir().unwrap();
        let (store, info) = stored(dir.path(), &data).await;
        // 30 ranges: the feed is at most a few ahead of the reader.
        let (mut obj, feed) = open(&store, info.clone(), 1, 10_000);
        let mut first = [0u8; 1000];
        let replace = async {
            obj.body.read_exact(&mut first).await.unwrap();
            // A new object of the same size under the key.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            std::fs::write(dir.path().join("k/obj"), vec![2u8; 300_000]).unwrap();
            let mut rest = Vec::new();
            obj.body.read_to_end(&mut rest).await
        };
        let (read, fed) = tokio::join!(replace, feed);
        let e = fed.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("replaced"), "{e}");
        assert!(read.is_err(), "the reader sees the failure");

        let (store, info) = stored(&dir.path().join("gone"), &data).await;
        std::fs::remove_file(dir.path().join("gone/k/obj")).unwrap();
        let (mut obj, feed) = open(&store, info, 2, 100_000);
        let mut got = Vec::new();
        let (read, fed) = tokio::join!(obj.body.read_to_end(&mut got), feed);
        assert_eq!(fed.unwrap_err().kind(), ErrorKind::NotFound);
        assert!(read.is_err());
    }
}
