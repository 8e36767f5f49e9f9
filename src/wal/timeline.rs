//! Timeline identifiers.

use std::fmt;

/// A PostgreSQL timeline id (never zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimelineId(u32);

impl TimelineId {
    pub fn new(id: u32) -> Option<Self> {
        (id != 0).then_some(TimelineId(id))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// Parses the 8 upper-case hex digits PostgreSQL uses in file names.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 8 || !is_upper_hex(s) {
            return None;
        }
        u32::from_str_radix(s, 16).ok().and_then(TimelineId::new)
    }
}

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

impl serde::Serialize for TimelineId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

/// True when every character is 0-9 or A-F (PostgreSQL writes upper case).
pub(crate) fn is_upper_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}
