//! Compression and client-side encryption, as streaming adapters: an
//! [`Encoder`] is a `Write` that compresses then encrypts into a sink, and
//! [`decoder`] wraps a `Read` to decrypt then decompress.

pub mod cipher;
pub mod compression;
pub mod key;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;

use flate2::write::GzEncoder;

pub use compression::Compression;
pub use key::EncryptionKey;

use crate::error::Error;

/// How objects are encoded on their way to the store.
#[derive(Debug, Clone)]
pub struct Codec {
    pub compression: Compression,
    pub key: Option<Arc<EncryptionKey>>,
}

impl Codec {
    pub fn encoder<W: Write>(&self, sink: W) -> io::Result<Encoder<W>> {
        let level = |l: u32| flate2::Compression::new(l);
        let inner = match (self.compression, &self.key) {
            (Compression::None, None) => EncoderInner::Plain(sink),
            (Compression::Gzip { level: l }, None) => {
                EncoderInner::Gzip(GzEncoder::new(sink, level(l)))
            }
            (Compression::None, Some(k)) => {
                EncoderInner::Encrypt(cipher::EncryptWriter::new(sink, k)?)
            }
            (Compression::Gzip { level: l }, Some(k)) => EncoderInner::GzipEncrypt(GzEncoder::new(
                cipher::EncryptWriter::new(sink, k)?,
                level(l),
            )),
        };
        Ok(Encoder { inner })
    }

    /// Name of the encryption scheme, recorded in object metadata.
    pub fn encryption_name(&self) -> Option<&'static str> {
        self.key.as_ref().map(|_| "aes-256-gcm-v1")
    }
}

/// Compresses, then encrypts, what is written to it. Call [`finish`](Self::finish).
pub struct Encoder<W: Write> {
    inner: EncoderInner<W>,
}

enum EncoderInner<W: Write> {
    Plain(W),
    Gzip(GzEncoder<W>),
    Encrypt(cipher::EncryptWriter<W>),
    GzipEncrypt(GzEncoder<cipher::EncryptWriter<W>>),
}

impl<W: Write> Encoder<W> {
    /// Writes the trailers (gzip CRC, last sealed chunk) and returns the sink.
    pub fn finish(self) -> io::Result<W> {
        match self.inner {
            EncoderInner::Plain(mut w) => {
                w.flush()?;
                Ok(w)
            }
            EncoderInner::Gzip(g) => g.finish(),
            EncoderInner::Encrypt(e) => e.finish(),
            EncoderInner::GzipEncrypt(g) => g.finish()?.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            EncoderInner::Plain(w) => w.write(buf),
            EncoderInner::Gzip(w) => w.write(buf),
            EncoderInner::Encrypt(w) => w.write(buf),
            EncoderInner::GzipEncrypt(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            EncoderInner::Plain(w) => w.flush(),
            EncoderInner::Gzip(w) => w.flush(),
            EncoderInner::Encrypt(w) => w.flush(),
            EncoderInner::GzipEncrypt(w) => w.flush(),
        }
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
    let reader: Box<dyn Read + Send> = match compression {
        Compression::None => plain,
        Compression::Gzip { .. } => {
            Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(plain)))
        }
    };
    Ok((reader, encrypted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codecs() -> Vec<Codec> {
        let k = Some(Arc::new(EncryptionKey::from_bytes([5; 32])));
        vec![
            Codec {
                compression: Compression::None,
                key: None,
            },
            Codec {
                compression: Compression::Gzip { level: 1 },
                key: None,
            },
            Codec {
                compression: Compression::None,
                key: k.clone(),
            },
            Codec {
                compression: Compression::Gzip { level: 1 },
                key: k,
            },
        ]
    }

    fn encode(c: &Codec, data: &[u8]) -> Vec<u8> {
        let mut e = c.encoder(Vec::new()).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
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

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        for c in codecs() {
            assert_eq!(decode(&c, encode(&c, &data)).unwrap(), data, "{c:?}");
        }
    }

    #[test]
    fn damaged_gzip_is_corrupt() {
        let c = &codecs()[1];
        let mut stored = encode(c, &vec![1u8; 100_000]);
        let n = stored.len();
        stored[n - 6] ^= 0xFF; // inside the CRC trailer
        assert!(matches!(decode(c, stored.clone()), Err(Error::Corrupt(_))));
        stored.truncate(n / 2);
        assert!(matches!(decode(c, stored), Err(Error::Corrupt(_))));
    }

    #[test]
    fn encrypted_object_without_key_is_wrong_key() {
        let stored = encode(&codecs()[3], b"secret wal");
        let no_key = &codecs()[1];
        assert!(matches!(decode(no_key, stored), Err(Error::WrongKey(_))));
    }
}
