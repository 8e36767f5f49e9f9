//! The client-side encryption key: 32 random bytes read from a file the
//! user points to. Never printed; identified by a short digest.

use std::fmt;
use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::Error;

pub const KEY_LEN: usize = 32;
pub const KEY_ID_LEN: usize = 8;

#[derive(Clone)]
pub struct EncryptionKey {
    bytes: [u8; KEY_LEN],
    id: [u8; KEY_ID_LEN],
}

impl EncryptionKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"pitr key id v1")
            .chain_update(bytes)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        EncryptionKey { bytes, id }
    }

    /// Reads a key file holding 64 hex digits, base64 of 32 bytes, or 32 raw bytes.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let raw = std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "cannot read encryption key file {} (--encryption-key-file / \
                 PITR_ENCRYPTION_KEY_FILE): {e}",
                path.display()
            ))
        })?;
        Self::parse(&raw).ok_or_else(|| {
            Error::Config(format!(
                "encryption key file {} does not hold a 256-bit key: expected 32 random bytes \
                 as 64 hex digits or base64 (make one with: head -c 32 /dev/urandom | base64 > key)",
                path.display()
            ))
        })
    }

    fn parse(raw: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok().map(str::trim);
        let decoded = text.and_then(|t| {
            if t.len() == 2 * KEY_LEN {
                hex::decode(t).ok()
            } else {
                base64::engine::general_purpose::STANDARD.decode(t).ok()
            }
        });
        let bytes: [u8; KEY_LEN] = match decoded {
            Some(d) if d.len() == KEY_LEN => d.try_into().ok()?,
            _ if raw.len() == KEY_LEN => raw.try_into().ok()?,
            _ => return None,
        };
        Some(Self::from_bytes(bytes))
    }

    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// A digest that tells keys apart without revealing them.
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptionKey(id {})", hex::encode(self.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_base64_and_raw() {
        let k = [7u8; 32];
        let hex_form = hex::encode(k);
        let b64 = base64::engine::general_purpose::STANDARD.encode(k);
        for raw in [hex_form.as_bytes(), b64.as_bytes(), &k[..]] {
            assert_eq!(EncryptionKey::parse(raw).unwrap().bytes(), &k);
        }
        assert!(EncryptionKey::parse(b"short").is_none());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let k = EncryptionKey::from_bytes([0xAB; 32]);
        assert!(!format!("{k:?}").contains("abab"));
    }
}
