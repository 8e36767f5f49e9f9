//! The one data path, both ways, with every codec, on the local store:
//! what goes up comes back byte for byte, and the recorded checksum and
//! size are checked on the way back.

use std::sync::Arc;

use super::{download, meta, upload};
use crate::codec::{Codec, Compression, EncryptionKey};
use crate::error::ErrorKind;
use crate::store::fs::FsStore;
use crate::store::{ObjectStore, PutOptions, PutOutcome};

/// 3 MiB of mixed content: compressible runs and pseudo-random bytes.
fn content() -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..3 << 20)
        .map(|i| {
            if (i / 4096) % 2 == 0 {
                (i % 251) as u8
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

fn codecs() -> Vec<Codec> {
    let key = Some(Arc::new(EncryptionKey::from_bytes([7; 32])));
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
            compression: Compression::Gzip { level: 6 },
            key: key.clone(),
        },
        Codec {
            compression: Compression::None,
            key,
        },
    ]
}

#[tokio::test]
async fn every_codec_round_trips_and_records_checksum_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::create(dir.path()).unwrap();
    let data = content();
    for (i, codec) in codecs().into_iter().enumerate() {
        let key = format!("s/obj{i}");
        let report = upload(
            &store,
            &key,
            &codec,
            std::io::Cursor::new(data.clone()),
            PutOptions::default(),
            "test data",
        )
        .await
        .unwrap();
        assert_eq!(report.outcome, PutOutcome::Stored);
        assert_eq!(report.plain_size, data.len() as u64);
        let info = store.head(&key).await.unwrap().unwrap();
        assert_eq!(info.size, report.stored_size);
        assert_eq!(info.metadata.get(meta::SHA256), Some(&report.sha256));
        assert_eq!(info.metadata.get(meta::SIZE), Some(&data.len().to_string()));
        assert_eq!(
            info.metadata.contains_key(meta::ENCRYPTION),
            codec.key.is_some()
        );
        let obj = store.get(&key).await.unwrap().unwrap();
        let (back, out) = download(obj, codec.compression, codec.key.clone(), Vec::new())
            .await
            .unwrap();
        assert!(out == data, "codec {i} round trip");
        assert!(back.checksum_verified);
        assert_eq!(back.encrypted, codec.key.is_some());
        assert_eq!(back.sha256, report.sha256);
    }
}

#[tokio::test]
async fn a_recorded_checksum_or_size_that_does_not_match_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::create(dir.path()).unwrap();
    let codec = Codec {
        compression: Compression::Gzip { level: 1 },
        key: None,
    };
    let data = content();
    upload(
        &store,
        "s/obj",
        &codec,
        std::io::Cursor::new(data),
        PutOptions::default(),
        "test data",
    )
    .await
    .unwrap();
    let meta_file = dir.path().join(".pitr-meta/s/obj.json");
    let original = std::fs::read_to_string(&meta_file).unwrap();
    for (field, bad) in [(meta::SHA256, "00".repeat(32)), (meta::SIZE, "12".into())] {
        let mut m: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&original).unwrap();
        m.insert(field.into(), bad.into());
        std::fs::write(&meta_file, serde_json::to_vec(&m).unwrap()).unwrap();
        let obj = store.get("s/obj").await.unwrap().unwrap();
        let e = download(obj, codec.compression, None, std::io::sink())
            .await
            .expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{field}: {e}");
        assert!(e.to_string().contains("s/obj"), "names the object: {e}");
    }
}

#[tokio::test]
async fn the_wrong_key_and_a_missing_key_are_told_apart_from_damage() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::create(dir.path()).unwrap();
    let codec = Codec {
        compression: Compression::Gzip { level: 1 },
        key: Some(Arc::new(EncryptionKey::from_bytes([1; 32]))),
    };
    upload(
        &store,
        "s/enc",
        &codec,
        std::io::Cursor::new(content()),
        PutOptions::default(),
        "test data",
    )
    .await
    .unwrap();
    let other = Some(Arc::new(EncryptionKey::from_bytes([2; 32])));
    for key in [other, None] {
        let obj = store.get("s/enc").await.unwrap().unwrap();
        let e = download(obj, codec.compression, key, std::io::sink())
            .await
            .expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::WrongKey, "{e}");
    }
}
