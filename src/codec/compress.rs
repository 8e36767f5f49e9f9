//! The compressing half of an [`Encoder`](super::Encoder): one streaming
//! compressor per [`Compression`], writing into the (maybe encrypting) sink.

use std::io::{self, Write};

use super::cipher::EncryptWriter;
use super::parallel_gzip::ParallelGzEncoder;
use super::Compression;

/// Where compressed bytes go: the store's writer, or the cipher in front of it.
pub(super) enum Sink<W: Write> {
    Plain(W),
    Encrypt(Box<EncryptWriter<W>>),
}

impl<W: Write> Sink<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Sink::Plain(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Sink::Encrypt(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Encrypt(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Encrypt(w) => w.flush(),
        }
    }
}

/// lz4 frames pitr writes: independent 4 MiB blocks and a content checksum
/// (barman-cloud's lz4.frame reads any frame).
fn lz4_frame() -> lz4_flex::frame::FrameInfo {
    lz4_flex::frame::FrameInfo::new()
        .block_size(lz4_flex::frame::BlockSize::Max4MB)
        .content_checksum(true)
}

/// Bytes per job of zstd's multi-threaded mode.
const ZSTD_JOB_SIZE: u32 = 4 << 20;

pub(super) enum Compressor<W: Write> {
    None(Sink<W>),
    Gzip(flate2::write::GzEncoder<Sink<W>>),
    ParallelGzip(ParallelGzEncoder<Sink<W>>),
    Bzip2(bzip2::write::BzEncoder<Sink<W>>),
    Xz(liblzma::write::XzEncoder<Sink<W>>),
    Zstd(zstd::stream::write::Encoder<'static, Sink<W>>),
    Lz4(Box<lz4_flex::frame::FrameEncoder<Sink<W>>>),
    Snappy(Box<snap::write::FrameEncoder<Sink<W>>>),
}

impl<W: Write> Compressor<W> {
    /// A compressor into `sink`. `workers` above 1 lets gzip and zstd
    /// compress on that many threads (base backups); the others use one.
    pub(super) fn new(c: Compression, sink: Sink<W>, workers: usize) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Compressor::None(sink),
            Compression::Gzip { level } if workers > 1 => {
                Compressor::ParallelGzip(ParallelGzEncoder::new(sink, level, workers))
            }
            Compression::Gzip { level } => Compressor::Gzip(flate2::write::GzEncoder::new(
                sink,
                flate2::Compression::new(level),
            )),
            Compression::Bzip2 { level } => {
                let level = bzip2::Compression::try_new(level).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "bzip2 level must be 1-9")
                })?;
                Compressor::Bzip2(bzip2::write::BzEncoder::new(sink, level))
            }
            Compression::Xz { level } => {
                Compressor::Xz(liblzma::write::XzEncoder::new(sink, level))
            }
            Compression::Zstd { level } => {
                let mut e = zstd::stream::write::Encoder::new(sink, level)?;
                e.include_checksum(true)?;
                if workers > 1 {
                    e.multithread(workers as u32)?;
                    // 4 MiB jobs whatever the level (libzstd's default grows
                    // to 4 windows: 32 MiB at level 9), so memory stays at a
                    // few jobs per worker; each job still sees the previous
                    // one's window, so the ratio barely moves.
                    e.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                }
                Compressor::Zstd(e)
            }
            Compression::Lz4 => Compressor::Lz4(Box::new(
                lz4_flex::frame::FrameEncoder::with_frame_info(lz4_frame(), sink),
            )),
            Compression::Snappy => {
                Compressor::Snappy(Box::new(snap::write::FrameEncoder::new(sink)))
            }
        })
    }

    /// Writes the compression's trailer, then finishes the sink.
    pub(super) fn finish(self) -> io::Result<W> {
        let sink = match self {
            Compressor::None(s) => s,
            Compressor::Gzip(e) => e.finish()?,
            Compressor::ParallelGzip(e) => e.finish()?,
            Compressor::Bzip2(e) => e.finish()?,
            Compressor::Xz(e) => e.finish()?,
            Compressor::Zstd(e) => e.finish()?,
            Compressor::Lz4(e) => e.finish().map_err(io::Error::other)?,
            Compressor::Snappy(e) => e.into_inner().map_err(|e| e.into_error())?,
        };
        sink.finish()
    }
}

impl<W: Write> Compressor<W> {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Compressor::None(w) => w,
            Compressor::Gzip(w) => w,
            Compressor::ParallelGzip(w) => w,
            Compressor::Bzip2(w) => w,
            Compressor::Xz(w) => w,
            Compressor::Zstd(w) => w,
            Compressor::Lz4(w) => w.as_mut(),
            Compressor::Snappy(w) => w.as_mut(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
    }
}
