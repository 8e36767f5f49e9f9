//! Client-side encryption: AES-256-GCM in independent chunks, so it streams
//! in both directions with bounded memory.
//!
//! Format (all integers big-endian):
//!
//! ```text
//! header (24 bytes): "PITRENC" | version=1 | log2(chunk size) | nonce prefix (7) | key id (8)
//! chunk i:           AES-256-GCM(key, nonce = prefix | i (u32) | last (u8), aad = header)
//!                    = ciphertext | tag (16)
//! ```
//!
//! Every chunk but the last holds exactly `chunk size` bytes of plaintext;
//! the last holds at most that many (possibly zero) and is flagged in its nonce, so a
//! truncated or extended object fails to decrypt. The key id lets a reader
//! tell "wrong key" from "corrupt object".

use std::io::{self, Read, Write};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};

use super::key::{EncryptionKey, KEY_ID_LEN};
use crate::error::Error;

pub const MAGIC: &[u8; 7] = b"PITRENC";
pub const HEADER_LEN: usize = 24;
const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const PREFIX_LEN: usize = 7;
const DEFAULT_CHUNK_LOG2: u8 = 16; // 64 KiB

/// True when `bytes` starts like a pitr-encrypted object.
pub fn is_encrypted(bytes: &[u8]) -> bool {
    bytes.len() >= MAGIC.len() && &bytes[..MAGIC.len()] == MAGIC
}

fn nonce(prefix: &[u8], index: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[PREFIX_LEN..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Encrypts everything written to it into `inner`. Call [`finish`](Self::finish).
pub struct EncryptWriter<W: Write> {
    inner: W,
    cipher: Aes256Gcm,
    header: [u8; HEADER_LEN],
    header_written: bool,
    chunk_size: usize,
    index: u32,
    buf: Vec<u8>,
}

impl<W: Write> EncryptWriter<W> {
    pub fn new(inner: W, key: &EncryptionKey) -> io::Result<Self> {
        let mut prefix = [0u8; PREFIX_LEN];
        getrandom::fill(&mut prefix)
            .map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
        let mut header = [0u8; HEADER_LEN];
        header[..7].copy_from_slice(MAGIC);
        header[7] = VERSION;
        header[8] = DEFAULT_CHUNK_LOG2;
        header[9..16].copy_from_slice(&prefix);
        header[16..24].copy_from_slice(&key.id());
        let chunk_size = 1usize << DEFAULT_CHUNK_LOG2;
        Ok(EncryptWriter {
            inner,
            cipher: Aes256Gcm::new(key.bytes().into()),
            header,
            header_written: false,
            chunk_size,
            index: 0,
            buf: Vec::with_capacity(chunk_size + TAG_LEN),
        })
    }

    fn seal(&mut self, len: usize, last: bool) -> io::Result<()> {
        if !self.header_written {
            self.inner.write_all(&self.header)?;
            self.header_written = true;
        }
        let n = nonce(&self.header[9..16], self.index, last);
        let mut chunk: Vec<u8> = self.buf.drain(..len).collect();
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&n), &self.header, &mut chunk)
            .map_err(|_| io::Error::other("AES-GCM encryption failed"))?;
        self.inner.write_all(&chunk)?;
        self.inner.write_all(&tag)?;
        self.index = self
            .index
            .checked_add(1)
            .ok_or_else(|| io::Error::other("object too large to encrypt"))?;
        Ok(())
    }

    /// Seals the last chunk and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let len = self.buf.len();
        self.seal(len, true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        // A full chunk is sealed only once more data follows it, so the
        // last chunk is always the short (or empty) one.
        while self.buf.len() > self.chunk_size {
            self.seal(self.chunk_size, false)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts a pitr-encrypted stream read from `inner`.
pub struct DecryptReader<R: Read> {
    inner: R,
    cipher: Aes256Gcm,
    header: [u8; HEADER_LEN],
    chunk_size: usize,
    index: u32,
    input: Vec<u8>,
    output: Vec<u8>,
    output_pos: usize,
    done: bool,
    what: String,
}

fn corrupt(what: &str, detail: &str) -> io::Error {
    io::Error::other(Error::Corrupt(format!("{what}: {detail}")))
}

impl<R: Read> DecryptReader<R> {
    /// Reads and checks the header. `what` names the object in errors.
    pub fn new(mut inner: R, key: &EncryptionKey, what: &str) -> io::Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        inner
            .read_exact(&mut header)
            .map_err(|_| corrupt(what, "encryption header is truncated"))?;
        if !is_encrypted(&header) {
            return Err(corrupt(what, "not a pitr-encrypted object"));
        }
        if header[7] != VERSION || !(10..=24).contains(&header[8]) {
            return Err(corrupt(
                what,
                &format!(
                    "unknown encryption format version {} / chunk {}",
                    header[7], header[8]
                ),
            ));
        }
        let stored_id: [u8; KEY_ID_LEN] = header[16..24].try_into().unwrap();
        if stored_id != key.id() {
            return Err(io::Error::other(Error::WrongKey(format!(
                "{what} was encrypted with another key (key id {}, the configured key is {}): \
                 point --encryption-key-file / PITR_ENCRYPTION_KEY_FILE at the key it was written with",
                hex::encode(stored_id),
                hex::encode(key.id())
            ))));
        }
        let chunk_size = 1usize << header[8];
        Ok(DecryptReader {
            inner,
            cipher: Aes256Gcm::new(key.bytes().into()),
            header,
            chunk_size,
            index: 0,
            input: Vec::with_capacity(chunk_size + TAG_LEN + 1),
            output: Vec::new(),
            output_pos: 0,
            done: false,
            what: what.to_string(),
        })
    }

    /// Fills `input` with up to one sealed chunk plus one byte, so we know
    /// whether the chunk is the last.
    fn refill(&mut self) -> io::Result<bool> {
        let want = self.chunk_size + TAG_LEN + 1;
        while self.input.len() < want {
            let start = self.input.len();
            self.input.resize(want, 0);
            let n = self.inner.read(&mut self.input[start..])?;
            self.input.truncate(start + n);
            if n == 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn open_next(&mut self) -> io::Result<()> {
        let eof = self.refill()?;
        let sealed = self.chunk_size + TAG_LEN;
        let (len, last) = if eof {
            if self.input.len() < TAG_LEN {
                return Err(corrupt(&self.what, "encrypted stream is truncated"));
            }
            (self.input.len(), true)
        } else {
            (sealed, false)
        };
        let mut chunk: Vec<u8> = self.input.drain(..len).collect();
        let tag = chunk.split_off(len - TAG_LEN);
        let n = nonce(&self.header[9..16], self.index, last);
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&n),
                &self.header,
                &mut chunk,
                Tag::from_slice(&tag),
            )
            .map_err(|_| {
                corrupt(
                    &self.what,
                    &format!(
                        "chunk {} fails authentication (the object is damaged)",
                        self.index
                    ),
                )
            })?;
        self.index += 1;
        self.output = chunk;
        self.output_pos = 0;
        self.done = last;
        Ok(())
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.output_pos == self.output.len() {
            if self.done {
                return Ok(0);
            }
            self.open_next()?;
        }
        let n = out.len().min(self.output.len() - self.output_pos);
        out[..n].copy_from_slice(&self.output[self.output_pos..self.output_pos + n]);
        self.output_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> EncryptionKey {
        EncryptionKey::from_bytes([b; 32])
    }

    fn seal(data: &[u8], k: &EncryptionKey) -> Vec<u8> {
        let mut w = EncryptWriter::new(Vec::new(), k).unwrap();
        for piece in data.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    fn open(sealed: &[u8], k: &EncryptionKey) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        DecryptReader::new(sealed, k, "obj")
            .and_then(|mut r| r.read_to_end(&mut out))
            .map_err(|e| Error::from_pipeline("obj", e))?;
        Ok(out)
    }

    #[test]
    fn round_trips_all_sizes() {
        let k = key(1);
        for len in [0usize, 1, 65535, 65536, 65537, 3 * 65536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let sealed = seal(&data, &k);
            assert!(is_encrypted(&sealed));
            assert_eq!(open(&sealed, &k).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn wrong_key_is_told_apart_from_corruption() {
        let sealed = seal(b"hello world", &key(1));
        assert!(matches!(open(&sealed, &key(2)), Err(Error::WrongKey(_))));
        let mut bad = sealed.clone();
        let last = bad.len() - 20;
        bad[last] ^= 1;
        assert!(matches!(open(&bad, &key(1)), Err(Error::Corrupt(_))));
    }

    #[test]
    fn truncation_and_extension_are_detected() {
        let k = key(3);
        let data = vec![9u8; 3 * 65536 + 5];
        let sealed = seal(&data, &k);
        // Cut at a chunk boundary: the remaining chunk is not flagged last.
        let cut = HEADER_LEN + 2 * (65536 + TAG_LEN);
        assert!(matches!(open(&sealed[..cut], &k), Err(Error::Corrupt(_))));
        let mut longer = sealed.clone();
        longer.extend_from_slice(&[0u8; 40]);
        assert!(matches!(open(&longer, &k), Err(Error::Corrupt(_))));
    }
}
