//! The segment header: the first bytes of every segment in use.
//!
//! Format version 2 (current), 32 bytes, little endian:
//! `[magic "EMQS"][version: u16 = 2][reserved: u16 = 0][seq: u64]`
//! `[erase count: u32][segment size in 4 KiB blocks: u32]`
//! `[capacity in 4 KiB blocks: u32][crc32 of bytes 0..28: u32]`.
//! The image describes its own geometry (D4): a store opened with another
//! `segment_size` or `capacity` is refused with an error naming the key.
//!
//! Format version 1 (read only, written before 2): 24 bytes,
//! `[magic][version: u16 = 1][reserved: u16][seq: u64][erase count: u32][crc32 of 0..20]`;
//! its geometry is not recorded and its frames' CRC does not cover the seq.
//!
//! Rule for every later version: the first 32 bytes keep magic, version
//! and a CRC of bytes 0..28 at 28..32, so an older build can tell a newer
//! segment from a damaged one.
//!
//! Invariants:
//! - Only an all-0xFF header is "erased". A header with the magic and a
//!   version newer than [`FORMAT_VERSION`] is never treated as free: the
//!   store refuses to open (a downgrade must not erase newer data).
//! - Anything else that does not verify is `Damaged`: reported with its
//!   segment and offset before the segment is ever reused.

/// Bytes of a current (version 2) header; records start right after it.
pub const HEADER_LEN: usize = 32;
/// Bytes of a version 1 header.
pub const HEADER_LEN_V1: usize = 24;
const MAGIC: [u8; 4] = *b"EMQS";
/// On-flash format version written by this build; bump only with a
/// migration path (version 1 is still read).
pub const FORMAT_VERSION: u16 = 2;
/// Geometry unit in the header.
const UNIT: u32 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Position of the segment in the log; higher is newer.
    pub seq: u64,
    /// How many times the segment's blocks were erased (wear).
    pub erase_count: u32,
    /// Segment size in bytes (a multiple of 4096).
    pub segment_size: u32,
    /// Capacity of the whole image in bytes (a multiple of 4096).
    pub capacity: u32,
}

/// What the first bytes of a segment hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// All 0xFF: never written since the last erase.
    Erased,
    /// A valid current header.
    Current(Header),
    /// A valid version 1 header (no geometry recorded).
    V1 { seq: u64, erase_count: u32 },
    /// The magic with a version this build does not know.
    Newer(u16),
    /// Neither erased nor a valid header (torn, flipped bits, foreign data).
    Damaged,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..20].copy_from_slice(&self.erase_count.to_le_bytes());
        out[20..24].copy_from_slice(&(self.segment_size / UNIT).to_le_bytes());
        out[24..28].copy_from_slice(&(self.capacity / UNIT).to_le_bytes());
        let crc = crc32fast::hash(&out[..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }
}

/// A version 1 header (tests and golden files build old images with it).
pub fn encode_v1(seq: u64, erase_count: u32) -> [u8; HEADER_LEN_V1] {
    let mut out = [0u8; HEADER_LEN_V1];
    out[..4].copy_from_slice(&MAGIC);
    out[4..6].copy_from_slice(&1u16.to_le_bytes());
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out[16..20].copy_from_slice(&erase_count.to_le_bytes());
    let crc = crc32fast::hash(&out[..20]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out
}

fn u32_at(raw: &[u8; HEADER_LEN], at: usize) -> u32 {
    u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]])
}

fn u64_at(raw: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Classifies the first [`HEADER_LEN`] bytes of a segment.
pub fn decode(raw: &[u8; HEADER_LEN]) -> Decoded {
    if raw.iter().all(|b| *b == 0xFF) {
        return Decoded::Erased;
    }
    if raw[..4] != MAGIC {
        return Decoded::Damaged;
    }
    let version = u16::from_le_bytes([raw[4], raw[5]]);
    match version {
        1 if crc32fast::hash(&raw[..20]) == u32_at(raw, 20) => Decoded::V1 {
            seq: u64_at(raw, 8),
            erase_count: u32_at(raw, 16),
        },
        FORMAT_VERSION if crc32fast::hash(&raw[..28]) == u32_at(raw, 28) => {
            let (seg, cap) = (u32_at(raw, 20), u32_at(raw, 24));
            match (seg.checked_mul(UNIT), cap.checked_mul(UNIT)) {
                (Some(segment_size), Some(capacity)) => Decoded::Current(Header {
                    seq: u64_at(raw, 8),
                    erase_count: u32_at(raw, 16),
                    segment_size,
                    capacity,
                }),
                _ => Decoded::Damaged,
            }
        }
        // Later versions keep this 32-byte layout's CRC (see the module
        // doc), so a torn or flipped version word never looks "newer".
        v if v > FORMAT_VERSION && crc32fast::hash(&raw[..28]) == u32_at(raw, 28) => {
            Decoded::Newer(v)
        }
        _ => Decoded::Damaged,
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
            segment_size: 1 << 20,
            capacity: 64 << 20,
        };
        let mut raw = h.encode();
        assert_eq!(decode(&raw), Decoded::Current(h));
        raw[9] ^= 1;
        assert_eq!(decode(&raw), Decoded::Damaged);
        assert_eq!(decode(&[0xFF; HEADER_LEN]), Decoded::Erased);
        let mut newer = h.encode();
        newer[4] = 3;
        assert_eq!(
            decode(&newer),
            Decoded::Damaged,
            "a flipped version is damage"
        );
        let crc = crc32fast::hash(&newer[..28]);
        newer[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&newer), Decoded::Newer(3));
        let mut v1 = [0xFF; HEADER_LEN];
        v1[..HEADER_LEN_V1].copy_from_slice(&encode_v1(5, 1));
        assert_eq!(
            decode(&v1),
            Decoded::V1 {
                seq: 5,
                erase_count: 1
            }
        );
    }
}
