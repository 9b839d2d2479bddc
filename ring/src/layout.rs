//! Byte layout of the ring: the structs and rules that `docs/ring-format.md` specifies.
//!
//! Everything in this module is plain, safe data handling: it never touches shared
//! memory. Callers copy bytes out of the ring first and validate the copy here.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[cfg(not(target_endian = "little"))]
compile_error!("the ring format is little-endian; big-endian hosts are not supported");

/// Magic bytes at offset 0 of every ring.
pub const RING_MAGIC: [u8; 8] = *b"RINGSIDE";
/// Version of the ring byte layout. Readers refuse any other value.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the data region: the ring header page.
pub const HEADER_REGION_LEN: u64 = 4096;
/// Offset of the 128-bit claim word (byte position low, frame sequence high).
pub const CLAIM_OFFSET: usize = 256;
/// Every frame starts at a multiple of this many bytes.
pub const FRAME_ALIGN: u64 = 8;
/// Length of the fixed frame header.
pub const FRAME_HEADER_LEN: usize = 40;
/// Longest topic name in bytes.
pub const MAX_TOPIC_LEN: usize = 255;
/// Smallest ring data capacity.
pub const MIN_CAPACITY: u64 = 64 * 1024;
/// Largest ring data capacity (1 TiB): keeps positions far from overflow and mappings sane.
pub const MAX_CAPACITY: u64 = 1 << 40;
/// Largest payload a ring may be configured for.
pub const MAX_PAYLOAD_LIMIT: u32 = 64 * 1024 * 1024;

/// Low bits of a commit word: the frame's state. Positions are 8-aligned, so these bits are free.
pub const STATE_MASK: u64 = FRAME_ALIGN - 1;
/// Frame flag: the check covers header and topic but not the payload (a producer that
/// chose raw bandwidth over detecting a lapped slow writer's stray bytes; see the spec).
pub const FLAG_PAYLOAD_UNCHECKED: u16 = 1;

/// The frame holds data.
pub const STATE_COMMITTED: u64 = 1;
/// The frame was reserved and then dropped by its producer: skip it, it is not a loss.
pub const STATE_DISCARDED: u64 = 2;

/// The ring header, at offset 0 of the shared memory object.
///
/// Written once by the sidecar (with `pwrite`, before any producer sees the fd) and never
/// changed afterwards. Readers copy it once, validate the copy, and never re-read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RingHeader {
    /// [`RING_MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// [`HEADER_REGION_LEN`], as a u32.
    pub header_len: u32,
    /// Data region size in bytes: a power of two, at least [`MIN_CAPACITY`].
    pub capacity: u64,
    /// Largest payload a producer may write.
    pub max_payload: u32,
    /// Reserved, zero.
    pub flags: u32,
    /// Random identity of this ring instance (a new ring means sequence numbers restart).
    pub ring_id: u64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
    /// Byte offset of the claim word, [`CLAIM_OFFSET`].
    pub claim_offset: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// xxh3-64 of the 56 bytes before this field.
    pub check: u64,
}

const RING_HEADER_CHECKED_LEN: usize = 56;

impl RingHeader {
    /// Builds a header for a new ring.
    pub fn new(config: &RingConfig, ring_id: u64, created_unix_ns: u64) -> Self {
        let mut header = RingHeader {
            magic: RING_MAGIC,
            version: FORMAT_VERSION,
            header_len: HEADER_REGION_LEN as u32,
            capacity: config.capacity,
            max_payload: config.max_payload,
            flags: 0,
            ring_id,
            created_unix_ns,
            claim_offset: CLAIM_OFFSET as u32,
            reserved: 0,
            check: 0,
        };
        header.check = header.compute_check();
        header
    }

    fn compute_check(&self) -> u64 {
        xxh3_64(&self.as_bytes()[..RING_HEADER_CHECKED_LEN])
    }

    /// Validates a header copied out of a ring. Returns the ring's configuration.
    ///
    /// # Errors
    ///
    /// [`HeaderError`] naming the first check that failed: magic, version, layout, checksum or
    /// geometry.
    pub fn validate(&self) -> Result<RingConfig, HeaderError> {
        if self.magic != RING_MAGIC {
            return Err(HeaderError::BadMagic(self.magic));
        }
        if self.version != FORMAT_VERSION {
            return Err(HeaderError::Version {
                found: self.version,
                supported: FORMAT_VERSION,
            });
        }
        if u64::from(self.header_len) != HEADER_REGION_LEN
            || self.claim_offset as usize != CLAIM_OFFSET
        {
            return Err(HeaderError::Layout {
                header_len: self.header_len,
                claim_offset: self.claim_offset,
            });
        }
        if self.check != self.compute_check() {
            return Err(HeaderError::Check);
        }
        let config = RingConfig {
            capacity: self.capacity,
            max_payload: self.max_payload,
        };
        config.validate().map_err(HeaderError::Config)?;
        Ok(config)
    }
}

/// Why a ring header copy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not a ringside ring.
    #[error("not a ringside ring: magic is {0:?}, expected \"RINGSIDE\"")]
    BadMagic([u8; 8]),
    /// Written by another format version.
    #[error(
        "ring format version {found} is not supported (this build reads version {supported}); run producers and sidecar from the same release"
    )]
    Version {
        /// Version in the header.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// Header geometry differs from the spec.
    #[error("ring header layout is wrong: header_len {header_len}, claim_offset {claim_offset}")]
    Layout {
        /// Header region length found.
        header_len: u32,
        /// Claim word offset found.
        claim_offset: u32,
    },
    /// The header's checksum does not match: it was overwritten.
    #[error("ring header checksum mismatch: the header was overwritten")]
    Check,
    /// Capacity or max payload out of range.
    #[error("ring header holds an invalid configuration: {0}")]
    Config(ConfigError),
}

/// Geometry of a ring: its data capacity and the largest payload it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Data region size in bytes: a power of two from 64 KiB to 1 TiB.
    pub capacity: u64,
    /// Largest payload in bytes; a frame's total length must stay within a quarter of the ring.
    pub max_payload: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            capacity: 64 * 1024 * 1024,
            max_payload: 64 * 1024,
        }
    }
}

impl RingConfig {
    /// Checks the geometry.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Capacity`] or [`ConfigError::MaxPayload`], with the values and the rule
    /// they break.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.capacity.is_power_of_two()
            || self.capacity < MIN_CAPACITY
            || self.capacity > MAX_CAPACITY
        {
            return Err(ConfigError::Capacity {
                capacity: self.capacity,
            });
        }
        if self.max_payload == 0
            || self.max_payload > MAX_PAYLOAD_LIMIT
            || self.max_frame_len() as u64 > self.capacity / 4
        {
            return Err(ConfigError::MaxPayload {
                max_payload: self.max_payload,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Largest frame on this ring: header, 255-byte topic and max payload, aligned.
    pub fn max_frame_len(&self) -> usize {
        frame_len(MAX_TOPIC_LEN, self.max_payload as usize)
    }

    /// Size of the shared memory object: header page plus data region.
    pub fn shm_len(&self) -> u64 {
        HEADER_REGION_LEN + self.capacity
    }
}

/// Total bytes a frame occupies in the ring, padding included.
#[inline]
pub const fn frame_len(topic_len: usize, payload_len: usize) -> usize {
    let raw = FRAME_HEADER_LEN + topic_len + payload_len;
    (raw + (FRAME_ALIGN as usize - 1)) & !(FRAME_ALIGN as usize - 1)
}

/// The fixed header at the start of every frame. Topic bytes, then payload bytes, follow it.
///
/// `commit` is written last, with release ordering; see `docs/ring-format.md`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct FrameHeader {
    /// The frame's absolute byte position OR'd with its state (`STATE_*`).
    pub commit: u64,
    /// Dense ring-wide frame sequence number, claimed together with the position.
    pub seq: u64,
    /// Producer's timestamp, nanoseconds since the Unix epoch (CLOCK_REALTIME).
    pub timestamp_ns: u64,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Producer id the sidecar assigned at the handshake (the producer's pid).
    pub producer_id: u32,
    /// Topic length in bytes (1..=255).
    pub topic_len: u16,
    /// Frame flags: 0, or [`FLAG_PAYLOAD_UNCHECKED`].
    pub flags: u16,
    /// Low 32 bits of the frame check; see [`frame_check`].
    pub check: u32,
}

const _: () = assert!(size_of::<FrameHeader>() == FRAME_HEADER_LEN);
const _: () = assert!(size_of::<RingHeader>() == 64);
const FRAME_HEADER_CHECKED_LEN: usize = 36;

/// The frame check: xxh3-64 of the payload, seeded with xxh3-64 of the topic, seeded with
/// xxh3-64 of the header's first 36 bytes with the commit word replaced by the bare position;
/// truncated to 32 bits. With [`FLAG_PAYLOAD_UNCHECKED`] the payload step is left out.
///
/// Binding position and sequence into the check means a stale frame from an earlier lap, or
/// a frame copied elsewhere, never validates. Chaining topic then payload lets a producer hash
/// its own source buffers (no re-read of the ring). A discarded frame's check covers the
/// header only.
pub fn frame_check(header: &FrameHeader, topic: &[u8], payload: &[u8]) -> u32 {
    let mut bound = *header;
    bound.commit &= !STATE_MASK;
    let seed = xxh3_64(&bound.as_bytes()[..FRAME_HEADER_CHECKED_LEN]);
    let full = if header.commit & STATE_MASK == STATE_DISCARDED {
        seed
    } else if header.flags & FLAG_PAYLOAD_UNCHECKED != 0 {
        xxh3_64_with_seed(topic, seed)
    } else {
        xxh3_64_with_seed(payload, xxh3_64_with_seed(topic, seed))
    };
    full as u32
}

/// Result of structurally checking a frame header copy against where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderCheck {
    /// The commit word does not name this position: not (yet) a frame written in this lap.
    NotCommitted,
    /// The header names this position but breaks a bound: a corrupt or forged frame.
    Malformed,
    /// Structurally valid committed frame.
    Committed,
    /// Structurally valid discarded frame.
    Discarded,
}

/// True if a commit word says "committed or discarded frame at `position`". Any other
/// value, including the zero of fresh memory at position 0, means "not committed here".
#[inline]
pub fn names_position(commit: u64, position: u64) -> bool {
    let state = commit & STATE_MASK;
    commit & !STATE_MASK == position && (state == STATE_COMMITTED || state == STATE_DISCARDED)
}

/// Checks a frame header copy found at `position` against the ring's bounds. Does not check
/// the body; see [`frame_check`].
pub fn check_header(header: &FrameHeader, position: u64, max_payload: u32) -> HeaderCheck {
    if !names_position(header.commit, position) {
        return HeaderCheck::NotCommitted;
    }
    let state = header.commit & STATE_MASK;
    if header.payload_len > max_payload
        || header.topic_len == 0
        || usize::from(header.topic_len) > MAX_TOPIC_LEN
        || header.flags & !FLAG_PAYLOAD_UNCHECKED != 0
    {
        return HeaderCheck::Malformed;
    }
    if state == STATE_COMMITTED {
        HeaderCheck::Committed
    } else {
        HeaderCheck::Discarded
    }
}

/// Reads a frame header from the first [`FRAME_HEADER_LEN`] bytes of `bytes`.
pub fn parse_frame_header(bytes: &[u8]) -> Option<FrameHeader> {
    FrameHeader::read_from_prefix(bytes).ok().map(|(h, _)| h)
}

/// Metadata of one validated frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMeta {
    /// Dense ring-wide sequence number.
    pub seq: u64,
    /// Absolute byte position of the frame in the ring's stream.
    pub position: u64,
    /// Producer timestamp, ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// Producer id (the producer's pid as seen by the sidecar).
    pub producer_id: u32,
    /// Topic length in bytes.
    pub topic_len: u16,
    /// Payload length in bytes.
    pub payload_len: u32,
}

impl FrameMeta {
    /// Builds the metadata from a validated header.
    pub fn from_header(header: &FrameHeader) -> Self {
        FrameMeta {
            seq: header.seq,
            position: header.commit & !STATE_MASK,
            timestamp_ns: header.timestamp_ns,
            producer_id: header.producer_id,
            topic_len: header.topic_len,
            payload_len: header.payload_len,
        }
    }

    /// Bytes of topic plus payload.
    pub fn body_len(&self) -> usize {
        usize::from(self.topic_len) + self.payload_len as usize
    }

    /// Total bytes the frame occupies in the ring.
    pub fn frame_len(&self) -> usize {
        frame_len(usize::from(self.topic_len), self.payload_len as usize)
    }
}

/// Validates a whole frame copy (header bytes followed by body) found at `position`.
/// This is the decoder the reader applies after copying; fuzzed by the property tests.
///
/// # Errors
///
/// The [`HeaderCheck`] that failed: [`HeaderCheck::NotCommitted`] when the commit word does not
/// name `position`, [`HeaderCheck::Malformed`] for any broken bound, a short body, a failed
/// frame check or a topic that is not UTF-8.
pub fn decode_frame(
    bytes: &[u8],
    position: u64,
    max_payload: u32,
) -> Result<FrameMeta, HeaderCheck> {
    let header = parse_frame_header(bytes).ok_or(HeaderCheck::Malformed)?;
    match check_header(&header, position, max_payload) {
        HeaderCheck::Committed | HeaderCheck::Discarded => {}
        other => return Err(other),
    }
    let meta = FrameMeta::from_header(&header);
    let body = bytes
        .get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + meta.body_len())
        .ok_or(HeaderCheck::Malformed)?;
    let (topic, payload) = body.split_at(usize::from(meta.topic_len));
    if frame_check(&header, topic, payload) != header.check {
        return Err(HeaderCheck::Malformed);
    }
    if std::str::from_utf8(topic).is_err() {
        return Err(HeaderCheck::Malformed);
    }
    Ok(meta)
}

/// A ring geometry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Capacity not a power of two or out of range.
    #[error(
        "ring capacity {capacity} bytes is invalid: it must be a power of two from 64 KiB to 1 TiB (for example 64MiB)"
    )]
    Capacity {
        /// The capacity asked for.
        capacity: u64,
    },
    /// Max payload zero, over the limit, or too large for the ring.
    #[error(
        "max payload {max_payload} bytes does not fit a ring of {capacity} bytes: a whole frame must stay within a quarter of the ring and the payload within 64 MiB; lower the max frame size or grow the ring"
    )]
    MaxPayload {
        /// The max payload asked for.
        max_payload: u32,
        /// The ring capacity.
        capacity: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(position: u64, seq: u64, topic: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut header = FrameHeader {
            commit: position | STATE_COMMITTED,
            seq,
            timestamp_ns: 7,
            payload_len: payload.len() as u32,
            producer_id: 3,
            topic_len: topic.len() as u16,
            flags: 0,
            check: 0,
        };
        header.check = frame_check(&header, topic, payload);
        let mut out = header.as_bytes().to_vec();
        out.extend_from_slice(topic);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn round_trip() {
        let bytes = encode(4096, 9, b"cpu", b"hello");
        let meta = decode_frame(&bytes, 4096, 1024).expect("valid frame");
        assert_eq!(meta.seq, 9);
        assert_eq!(meta.body_len(), 8);
        assert_eq!(meta.frame_len(), 48);
    }

    #[test]
    fn stale_lap_never_validates() {
        let bytes = encode(4096, 9, b"cpu", b"hello");
        assert_eq!(
            decode_frame(&bytes, 4096 + 65536, 1024),
            Err(HeaderCheck::NotCommitted)
        );
    }

    #[test]
    fn header_round_trip_and_tamper() {
        let config = RingConfig::default();
        let header = RingHeader::new(&config, 42, 1);
        assert_eq!(header.validate(), Ok(config));
        let mut tampered = header;
        tampered.capacity *= 2;
        assert_eq!(tampered.validate(), Err(HeaderError::Check));
    }

    #[test]
    fn config_bounds() {
        assert!(
            RingConfig {
                capacity: 1 << 20,
                max_payload: 1024
            }
            .validate()
            .is_ok()
        );
        assert!(
            RingConfig {
                capacity: 1000,
                max_payload: 10
            }
            .validate()
            .is_err()
        );
        assert!(
            RingConfig {
                capacity: 1 << 16,
                max_payload: 1 << 15
            }
            .validate()
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), pos in 0u64..1<<20) {
            let position = pos & !STATE_MASK;
            let _ = decode_frame(&bytes, position, 256);
        }

        #[test]
        fn any_single_bit_flip_is_caught(
            topic in "[a-z]{1,12}",
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            bit in 0usize..2000,
        ) {
            let mut bytes = encode(8192, 5, topic.as_bytes(), &payload);
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_frame(&bytes, 8192, 1024).is_err());
        }
    }
}
