//! The decompressing half of [`decoder`](super::decoder): a streaming
//! reader per [`Compression`], whose format errors become "damaged object"
//! errors (`InvalidData`, hence [`Error::Corrupt`]) naming the object.

use std::io::{self, BufReader, Read};

use super::Compression;
use crate::error::Error;

/// Wraps `plain` (the decrypted stored bytes) to decompress it.
pub(super) fn reader(
    plain: Box<dyn Read + Send>,
    compression: Compression,
    what: &str,
) -> io::Result<Box<dyn Read + Send>> {
    let inner: Box<dyn Read + Send> = match compression {
        Compression::None => return Ok(plain),
        Compression::Gzip { .. } => {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(plain)))
        }
        Compression::Bzip2 { .. } => Box::new(bzip2::read::MultiBzDecoder::new(plain)),
        Compression::Xz { .. } => Box::new(liblzma::read::XzDecoder::new_multi_decoder(plain)),
        Compression::Zstd { .. } => Box::new(zstd::stream::read::Decoder::new(plain)?),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(plain)),
        Compression::Snappy => Box::new(snap::read::FrameDecoder::new(plain)),
    };
    Ok(Box::new(FormatErrors {
        inner,
        what: format!("{what} ({} stream)", compression.name()),
    }))
}

/// Turns a decompressor's own errors into `InvalidData` naming the
/// object; errors from below (the store, the cipher) pass unchanged.
struct FormatErrors {
    inner: Box<dyn Read + Send>,
    what: String,
}

impl Read for FormatErrors {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let from_below = e.get_ref().is_some_and(|inner| inner.is::<Error>());
            if from_below || e.kind() == io::ErrorKind::Interrupted {
                e
            } else {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is damaged: {e}", self.what),
                )
            }
        })
    }
}
