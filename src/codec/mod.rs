//! Compression and client-side encryption, as streaming adapters: an
//! [`Encoder`] is a `Write` that compresses then encrypts into a sink, and
//! [`decoder`] wraps a `Read` to decrypt then decompress.

pub mod cipher;
mod compress;
pub mod compression;
mod decompress;
pub mod key;
mod parallel_gzip;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;

pub use compression::Compression;
pub use key::EncryptionKey;

use crate::error::Error;
use compress::{Compressor, Sink};

/// How objects are encoded on their way to the store.
#[derive(Debug, Clone)]
pub struct Codec {
    pub compression: Compression,
    pub key: Option<Arc<EncryptionKey>>,
}

impl Codec {
    /// An encoder on one thread (WAL, small objects).
    pub fn encoder<W: Write>(&self, sink: W) -> io::Result<Encoder<W>> {
        self.encoder_with_workers(sink, 1)
    }

    /// An encoder that compresses on up to `workers` threads where the
    /// compression allows it and stays readable by barman-cloud: zstd's
    /// multi-threaded mode (one frame), gzip in parallel blocks (one
    /// member). The others use one thread whatever `workers` says.
    pub fn encoder_with_workers<W: Write>(
        &self,
        sink: W,
        workers: usize,
    ) -> io::Result<Encoder<W>> {
        let sink = match &self.key {
            None => Sink::Plain(sink),
            Some(k) => Sink::Encrypt(Box::new(cipher::EncryptWriter::new(sink, k)?)),
        };
        Ok(Encoder {
            inner: Compressor::new(self.compression, sink, workers)?,
        })
    }

    /// Name of the encryption scheme, recorded in object metadata.
    pub fn encryption_name(&self) -> Option<&'static str> {
        self.key.as_ref().map(|_| "aes-256-gcm-v1")
    }
}

/// Compresses, then encrypts, what is written to it. Call [`finish`](Self::finish).
pub struct Encoder<W: Write> {
    inner: Compressor<W>,
}

impl<W: Write> Encoder<W> {
    /// Writes the trailers (compression trailer, last sealed chunk) and
    /// returns the sink.
    pub fn finish(self) -> io::Result<W> {
        self.inner.finish()
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Wraps `source` (an object's stored bytes) so that reading it yields the
/// original content. Encryption is detected from the object's header;
/// compression comes from its name. `what` names the object in errors.
/// Decoding errors surface as `io::Error`s that [`Error::from_pipeline`]
/// turns back into `Corrupt` or `WrongKey`.
pub fn decoder<R: Read + Send + 'static>(
    source: R,
    compression: Compression,
    key: Option<&EncryptionKey>,
    what: &str,
) -> io::Result<Box<dyn Read + Send>> {
    decoder_reporting(source, compression, key, what).map(|(reader, _)| reader)
}

/// [`decoder`], also saying whether the object was encrypted (pitr's
/// client-side encryption), so a caller that expects encryption can refuse
/// a plaintext object.
pub fn decoder_reporting<R: Read + Send + 'static>(
    source: R,
    compression: Compression,
    key: Option<&EncryptionKey>,
    what: &str,
) -> io::Result<(Box<dyn Read + Send>, bool)> {
    let mut buffered = BufReader::with_capacity(256 * 1024, source);
    let encrypted = cipher::is_encrypted(buffered.fill_buf()?);
    let plain: Box<dyn Read + Send> = match (encrypted, key) {
        (false, _) => Box::new(buffered),
        (true, Some(k)) => Box::new(cipher::DecryptReader::new(buffered, k, what)?),
        (true, None) => {
            return Err(io::Error::other(Error::WrongKey(format!(
                "{what} is encrypted with pitr client-side encryption: set \
                 --encryption-key-file / PITR_ENCRYPTION_KEY_FILE to its key"
            ))))
        }
    };
    Ok((decompress::reader(plain, compression, what)?, encrypted))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every compression at its default level.
    fn compressions() -> Vec<Compression> {
        compression::KNOWN_SUFFIXES
            .iter()
            .map(|s| Compression::for_suffix(s, "obj").unwrap())
            .collect()
    }

    /// Every compression, without and with encryption.
    fn codecs() -> Vec<Codec> {
        let k = Some(Arc::new(EncryptionKey::from_bytes([5; 32])));
        let mut out = Vec::new();
        for compression in compressions() {
            for key in [None, k.clone()] {
                out.push(Codec { compression, key });
            }
        }
        out
    }

    fn encode_with(c: &Codec, data: &[u8], workers: usize) -> Vec<u8> {
        let mut e = c.encoder_with_workers(Vec::new(), workers).unwrap();
        for piece in data.chunks(100_000) {
            e.write_all(piece).unwrap();
        }
        e.finish().unwrap()
    }

    fn encode(c: &Codec, data: &[u8]) -> Vec<u8> {
        encode_with(c, data, 1)
    }

    fn decode(c: &Codec, stored: Vec<u8>) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        decoder(
            io::Cursor::new(stored),
            c.compression,
            c.key.as_deref(),
            "obj",
        )
        .and_then(|mut r| r.read_to_end(&mut out))
        .map_err(|e| Error::from_pipeline("obj", e))?;
        Ok(out)
    }

    /// Compressible but not trivial: WAL-like repetition with noise.
    fn sample(len: usize) -> Vec<u8> {
        let mut x = 1u64;
        (0..len)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if i % 7 == 0 {
                    (x >> 40) as u8
                } else {
                    (i % 97) as u8
                }
            })
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample(1_200_000);
        for c in codecs() {
            let stored = encode(&c, &data);
            if c.compression != Compression::None {
                assert!(stored.len() < data.len(), "{c:?} did not compress");
            }
            assert!(decode(&c, stored).unwrap() == data, "{c:?}");
            assert_eq!(decode(&c, encode(&c, b"")).unwrap(), b"", "{c:?} empty");
        }
    }

    #[test]
    fn multi_threaded_encoders_round_trip() {
        let data = sample(5_000_000);
        for c in codecs() {
            let stored = encode_with(&c, &data, 3);
            assert!(decode(&c, stored).unwrap() == data, "{c:?}");
        }
    }

    #[test]
    fn stored_magic_is_barmans() {
        // The first bytes barman's own compressors check (barman.compression).
        let magic: [(&str, &[u8]); 6] = [
            ("gzip", b"\x1f\x8b\x08"),
            ("bzip2", b"BZh"),
            ("xz", b"\xfd7zXZ\x00"),
            ("zstd", b"(\xb5/\xfd"),
            ("lz4", b"\x04\x22\x4d\x18"),
            ("snappy", b"\xff\x06\x00\x00sNaPpY"),
        ];
        for (name, m) in magic {
            let c = Codec {
                compression: Compression::default_for(name).unwrap(),
                key: None,
            };
            assert!(encode(&c, b"some wal").starts_with(m), "{name}");
            assert!(
                encode_with(&c, b"some wal", 2).starts_with(m),
                "{name} parallel"
            );
        }
    }

    #[test]
    fn damaged_streams_are_corrupt() {
        let data = sample(300_000);
        for c in codecs() {
            if c.compression == Compression::None && c.key.is_none() {
                continue; // nothing to check a plain object against
            }
            let stored = encode(&c, &data);
            let n = stored.len();
            // A flipped byte in the middle, and one near the end (trailer).
            for at in [n / 2, n - 3] {
                let mut bad = stored.clone();
                bad[at] ^= 0x55;
                match decode(&c, bad) {
                    Err(Error::Corrupt(m)) => assert!(m.contains("obj"), "{m}"),
                    other => panic!("{c:?} flipped at {at}/{n}: {:?}", other.map(|v| v.len())),
                }
            }
            let mut cut = stored.clone();
            cut.truncate(n / 2);
            assert!(
                matches!(decode(&c, cut), Err(Error::Corrupt(_))),
                "{c:?} truncated"
            );
        }
    }

    #[test]
    fn encrypted_object_without_key_is_wrong_key() {
        for compression in compressions() {
            let with_key = Codec {
                compression,
                key: Some(Arc::new(EncryptionKey::from_bytes([5; 32]))),
            };
            let stored = encode(&with_key, b"secret wal");
            let no_key = Codec {
                compression,
                key: None,
            };
            assert!(
                matches!(decode(&no_key, stored), Err(Error::WrongKey(_))),
                "{compression}"
            );
        }
    }
}
