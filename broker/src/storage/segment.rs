//! The segment header: the first bytes of every segment in use.
//!
//! `[magic "EMQS"][format version: u16][reserved: u16][seq: u64][erase count: u32][crc32: u32]`,
//! little endian, 24 bytes (a multiple of the flash word). A segment whose
//! header is missing, torn or of another format is treated as free.

/// Bytes of the header.
pub const HEADER_LEN: usize = 24;
const MAGIC: [u8; 4] = *b"EMQS";
/// On-flash format version; bump only with a migration path.
pub const FORMAT_VERSION: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Position of the segment in the log; higher is newer.
    pub seq: u64,
    /// How many times the segment's blocks were erased (wear).
    pub erase_count: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..20].copy_from_slice(&self.erase_count.to_le_bytes());
        let crc = crc32fast::hash(&out[..20]);
        out[20..24].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(raw: &[u8; HEADER_LEN]) -> Option<Header> {
        if raw[..4] != MAGIC || raw[4..6] != FORMAT_VERSION.to_le_bytes() {
            return None;
        }
        let crc = u32::from_le_bytes([raw[20], raw[21], raw[22], raw[23]]);
        if crc32fast::hash(&raw[..20]) != crc {
            return None;
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&raw[8..16]);
        Some(Header {
            seq: u64::from_le_bytes(seq),
            erase_count: u32::from_le_bytes([raw[16], raw[17], raw[18], raw[19]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let h = Header {
            seq: 42,
            erase_count: 7,
        };
        let mut raw = h.encode();
        assert_eq!(Header::decode(&raw), Some(h));
        raw[9] ^= 1;
        assert_eq!(Header::decode(&raw), None);
        assert_eq!(Header::decode(&[0xFF; HEADER_LEN]), None);
    }
}
