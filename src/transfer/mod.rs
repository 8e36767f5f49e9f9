//! The one data path. Upload: source -> compress -> encrypt -> store;
//! download: store -> decrypt -> decompress -> sink. Encoding runs on a
//! blocking thread and talks to the async store through a small bounded
//! channel, so compression and network transfer overlap and memory stays
//! bounded whatever the size of the data.

pub(crate) mod channel_io;
pub mod download;
pub mod ranged;
pub mod upload;

/// Metadata keys pitr writes (as `x-amz-meta-*` on S3); Barman ignores them.
pub mod meta {
    /// Hex SHA-256 of the original (decoded) content.
    pub const SHA256: &str = "pitr-sha256";
    /// Size in bytes of the original content.
    pub const SIZE: &str = "pitr-size";
    /// Client-side encryption scheme, when used.
    pub const ENCRYPTION: &str = "pitr-encryption";
    /// Compression, as recorded by pitr (the suffix says it too).
    pub const COMPRESSION: &str = "pitr-compression";
}

pub use download::{download, DownloadReport};
pub use upload::{upload, upload_with_workers, UploadReport};

#[cfg(test)]
mod tests;
