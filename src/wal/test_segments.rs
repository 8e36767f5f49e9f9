//! WAL files for unit tests: segments with a valid long page header and
//! content unique to each (timeline, segment, system), 1 MiB each.

use std::path::{Path, PathBuf};

use super::page_header::fake_first_page;
use super::{SegmentName, TimelineId};

pub const TEST_SEGMENT_SIZE: u64 = 1 << 20;

/// Writes segment `number` of `timeline` of database system `system` into
/// `dir`, under its WAL name, and returns its path.
pub fn write_segment(dir: &Path, timeline: u32, number: u64, system: u64) -> PathBuf {
    let timeline_id = TimelineId::new(timeline).expect("timelines start at 1");
    let name = SegmentName::from_number(timeline_id, number, TEST_SEGMENT_SIZE);
    let mut bytes = fake_first_page(system, number * TEST_SEGMENT_SIZE, TEST_SEGMENT_SIZE as u32);
    bytes.resize(TEST_SEGMENT_SIZE as usize, 0);
    // Something that differs between segments beyond the header.
    let tag = format!("{timeline}/{number}/{system}");
    bytes[8192..8192 + tag.len()].copy_from_slice(tag.as_bytes());
    let path = dir.join(name.to_string());
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Settings of a local-directory repository at `root` for server `server`
/// (gzip level 1, no encryption), for unit tests.
pub fn fs_repo_config(root: &Path, server: &str) -> crate::config::RepoConfig {
    crate::config::RepoConfig {
        location: crate::config::RepoLocation::Fs {
            root: root.to_path_buf(),
        },
        server_name: server.into(),
        s3: crate::config::S3Settings::default(),
        compression: crate::codec::Compression::Gzip { level: 1 },
        encryption_key_file: None,
    }
}

/// A local-directory repository at `root` (created), server `main`.
pub fn fs_repo(root: &Path) -> crate::repo::Repo {
    crate::repo::Repo::create(&fs_repo_config(root, "main")).unwrap()
}
