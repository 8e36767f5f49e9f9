//! WAL: names, positions, page headers, and the push and fetch operations
//! that `archive_command` and `restore_command` call.

pub mod archive_stats;
pub mod fetch;
pub mod history;
pub mod identity;
pub mod locate;
pub mod lookahead;
pub mod lsn;
pub mod name;
pub mod page_header;
pub mod prefetch;
pub mod push;
pub mod push_cache;
pub mod records;
pub mod restore_command;
#[cfg(test)]
pub(crate) mod test_segments;
pub mod timeline;

pub use lsn::Lsn;
pub use name::{SegmentName, WalFileName};
pub use timeline::TimelineId;
