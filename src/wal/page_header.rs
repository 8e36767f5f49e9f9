//! The long page header at the start of every WAL segment: it carries the
//! database system identifier and the segment size, which is how pitr knows
//! which cluster a segment belongs to without asking the server.

use crate::error::Error;

/// Bytes needed to read the long header.
pub const LONG_HEADER_LEN: usize = 40;
/// `xlp_info` flag: this page has the long header.
pub(crate) const XLP_LONG_HEADER: u16 = 0x0002;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPageHeader {
    pub magic: u16,
    pub timeline: u32,
    pub page_address: u64,
    pub system_identifier: u64,
    pub segment_size: u32,
    pub block_size: u32,
}

impl LongPageHeader {
    /// Parses the first page of a segment. `what` names the file in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, Error> {
        if bytes.len() < LONG_HEADER_LEN {
            return Err(Error::Corrupt(format!(
                "{what} is {} bytes long, too short to be a WAL segment",
                bytes.len()
            )));
        }
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        let info = u16_at(2);
        if info & XLP_LONG_HEADER == 0 {
            return Err(Error::Corrupt(format!(
                "{what} does not start with a WAL long page header (xlp_info {info:#06x}): \
                 it is not a WAL segment"
            )));
        }
        let header = LongPageHeader {
            magic: u16_at(0),
            timeline: u32_at(4),
            page_address: u64_at(8),
            system_identifier: u64_at(24),
            segment_size: u32_at(32),
            block_size: u32_at(36),
        };
        let seg = header.segment_size;
        if !seg.is_power_of_two() || !(1 << 20..=1 << 30).contains(&seg) {
            return Err(Error::Corrupt(format!(
                "{what} has an impossible segment size {seg} in its page header: \
                 it is not a WAL segment"
            )));
        }
        Ok(header)
    }
}

#[cfg(test)]
pub(crate) fn fake_first_page(
    system_identifier: u64,
    page_address: u64,
    segment_size: u32,
) -> Vec<u8> {
    let mut page = vec![0u8; 8192];
    page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    page[2..4].copy_from_slice(&(XLP_LONG_HEADER | 0x0004).to_le_bytes());
    page[4..8].copy_from_slice(&1u32.to_le_bytes());
    page[8..16].copy_from_slice(&page_address.to_le_bytes());
    page[24..32].copy_from_slice(&system_identifier.to_le_bytes());
    page[32..36].copy_from_slice(&segment_size.to_le_bytes());
    page[36..40].copy_from_slice(&8192u32.to_le_bytes());
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_system_identifier() {
        let page = fake_first_page(7_310_000_000_000_000_001, 0x0300_0000, 16 << 20);
        let h = LongPageHeader::parse(&page, "x").unwrap();
        assert_eq!(h.system_identifier, 7_310_000_000_000_000_001);
        assert_eq!(h.page_address, 0x0300_0000);
        assert_eq!(h.segment_size, 16 << 20);
    }

    #[test]
    fn refuses_non_wal() {
        assert!(LongPageHeader::parse(&[0u8; 10], "x").is_err());
        assert!(LongPageHeader::parse(&[0u8; 8192], "x").is_err());
        let mut page = fake_first_page(1, 0, 16 << 20);
        page[32..36].copy_from_slice(&12345u32.to_le_bytes());
        assert!(LongPageHeader::parse(&page, "x").is_err());
    }
}
