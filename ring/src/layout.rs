//! Byte layout of the ring: the structs and rules that `docs/ring-format.md` specifies.
//!
//! Everything in this module is plain, safe data handling: it never touches shared
//! memory. Callers copy bytes out of the ring first and validate the copy here.

use twox_hash::XxHash3_64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[cfg(not(target_endian = "little"))]
compile_error!("the ring format is little-endian; big-endian hosts are not supported");

/// Magic bytes at offset 0 of every ring.
pub const RING_MAGIC: [u8; 8] = *b"RINGSIDE";
/// Version of the ring byte layout and its frame check. Readers refuse any other value.
///
/// Version 2 (this one) computes the frame check as two xxh3 calls: one over the frame's
/// body (topic and payload, contiguous in the ring and in a reader's copy), one over the
/// header with the body's hash appended. Version 1 chained three calls (header, topic,
/// payload).
pub const FORMAT_VERSION: u32 = 2;
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

impl FrameHeader {
    /// Bytes 8..40 of the header (everything after the commit word) as four little-endian
    /// words, computed from the fields: a writer stores them straight from registers.
    #[inline(always)]
    pub fn tail_words(&self) -> [u64; 4] {
        [
            self.seq,
            self.timestamp_ns,
            u64::from(self.payload_len) | u64::from(self.producer_id) << 32,
            u64::from(self.topic_len) | u64::from(self.flags) << 16 | u64::from(self.check) << 32,
        ]
    }
}

const _: () = assert!(size_of::<FrameHeader>() == FRAME_HEADER_LEN);
const _: () = assert!(size_of::<RingHeader>() == 64);
const FRAME_HEADER_CHECKED_LEN: usize = 36;

/// XXH3-64 (default secret, seed 0) of `bytes`, as specified by the xxHash project. Inputs
/// longer than 240 bytes use AVX2 (or NEON) when the CPU has it, detected at run time, and
/// SSE2 otherwise; every path computes the same value.
#[inline]
pub fn xxh3_64(bytes: &[u8]) -> u64 {
    XxHash3_64::oneshot(bytes)
}

/// Fixed part of the frame check's second input: the header's first 36 bytes (commit
/// replaced by the bare position, `check` left out) and the payload hash, little-endian.
const CHECK_BLOCK_FIXED: usize = FRAME_HEADER_CHECKED_LEN + 8;

/// The frame check (format version 2) of a frame with this header, topic and payload:
///
/// ```text
/// payload_hash = xxh3_64(payload)          (the empty input when the frame is discarded
///                                           or flagged FLAG_PAYLOAD_UNCHECKED)
/// check = low32(xxh3_64(header[0..36] with commit := position ‖ le64(payload_hash) ‖ topic))
///                                          (no topic when the frame is discarded)
/// ```
///
/// Binding position and sequence into the check means a stale frame from an earlier lap, or
/// a frame copied elsewhere, never validates; a torn copy or stray bytes change a hash input.
/// Two hash calls whatever the sizes, each over one contiguous buffer: the payload (the
/// producer's own buffer for `send`, the ring for a reservation, a reader's copy), and a
/// small block on the stack. `docs/ring-format.md` §3 says what this check does and does not
/// protect against.
#[inline]
pub fn frame_check(header: &FrameHeader, topic: &[u8], payload: &[u8]) -> u32 {
    let hash = if header.commit & STATE_MASK == STATE_DISCARDED {
        xxh3_64(&[])
    } else {
        payload_hash(header.flags, payload)
    };
    frame_check_hashed(header, topic, hash)
}

/// The first half of [`frame_check`] for a committed frame with these flags: the payload's
/// hash as the check covers it (the empty input's with [`FLAG_PAYLOAD_UNCHECKED`]). A
/// producer can compute it before its frame is written.
#[inline]
pub fn payload_hash(flags: u16, payload: &[u8]) -> u64 {
    if flags & FLAG_PAYLOAD_UNCHECKED != 0 {
        xxh3_64(&[])
    } else {
        xxh3_64(payload)
    }
}

/// The second half of [`frame_check`], given the payload hash ([`payload_hash`], or the
/// empty input's hash for a discarded frame).
#[inline]
pub fn frame_check_hashed(header: &FrameHeader, topic: &[u8], payload_hash: u64) -> u32 {
    let topic = if header.commit & STATE_MASK == STATE_DISCARDED {
        &[][..]
    } else {
        &topic[..topic.len().min(MAX_TOPIC_LEN)]
    };
    // Short topics (the common case) build the block in 64 bytes rather than 299: less to
    // zero-initialise on every frame.
    if topic.len() <= SHORT_TOPIC {
        ShortCheckBlock::new(header, payload_hash, topic).hash()
    } else {
        seal::<{ CHECK_BLOCK_FIXED + MAX_TOPIC_LEN }>(header, payload_hash, topic)
    }
}

/// Longest topic sealed in the short block.
const SHORT_TOPIC: usize = 64 - CHECK_BLOCK_FIXED;

/// The second hash of [`frame_check`], built in an `N`-byte block (`N` ≥ 44 + topic length).
#[inline(always)]
fn seal<const N: usize>(header: &FrameHeader, payload_hash: u64, topic: &[u8]) -> u32 {
    CheckBlock::<N>::new(header, payload_hash, topic).hash()
}

/// The frame check's second input (header words, payload hash, topic) built in an `N`-byte
/// block, ready to hash. Building it and hashing it are separate steps so that a writer can
/// do other work in between (copy the payload): the block is written with a few 8-byte
/// stores from registers, and the hash's loads, several of which straddle two of those
/// stores, then find them already in the L1 cache instead of stalling on a failed
/// store-to-load forward (measured on `send` 64 B: the single hottest instruction).
#[derive(Debug)]
pub struct CheckBlock<const N: usize> {
    block: [u8; N],
    len: usize,
}

/// The check block's first five words (bytes 0..40), shared by [`CheckBlock`] and
/// [`ShortCheckBlock`]: the commit word without its state bits, seq, timestamp, the
/// lengths word, then topic_len, flags and the payload hash's low half.
#[inline(always)]
fn check_block_words(header: &FrameHeader, payload_hash: u64) -> [u64; 5] {
    let [seq, timestamp, lengths, _] = header.tail_words();
    [
        header.commit & !STATE_MASK,
        seq,
        timestamp,
        lengths,
        u64::from(header.topic_len)
            | u64::from(header.flags) << 16
            | (payload_hash & 0xffff_ffff) << 32,
    ]
}

impl<const N: usize> CheckBlock<N> {
    /// The block for `header` (its `check` ignored, its commit word's state bits cleared),
    /// `payload_hash` and `topic` (cut to `N − 44` bytes; callers choose `N` large enough:
    /// see [`frame_check_hashed`]).
    #[inline(always)]
    pub fn new(header: &FrameHeader, payload_hash: u64, topic: &[u8]) -> Self {
        const { assert!(N >= CHECK_BLOCK_FIXED) };
        let mut block = [0u8; N];
        let words = check_block_words(header, payload_hash);
        for (i, word) in words.iter().enumerate() {
            block[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        block[40..CHECK_BLOCK_FIXED].copy_from_slice(&((payload_hash >> 32) as u32).to_le_bytes());
        let len = (CHECK_BLOCK_FIXED + topic.len()).min(N);
        block[CHECK_BLOCK_FIXED..len].copy_from_slice(&topic[..len - CHECK_BLOCK_FIXED]);
        CheckBlock { block, len }
    }

    /// The check: low 32 bits of the block's xxh3.
    #[inline(always)]
    pub fn hash(&self) -> u32 {
        xxh3_64(&self.block[..self.len]) as u32
    }
}

/// Longest topic whose check block is a [`ShortCheckBlock`] (20 bytes).
pub const SHORT_CHECK_TOPIC: usize = SHORT_TOPIC;

/// The check block of a frame whose topic fits [`SHORT_CHECK_TOPIC`] (44 to 64 bytes, the
/// common case), held as eight little-endian words and hashed without a byte buffer: the
/// same value as [`CheckBlock`]'s xxh3 over the same bytes, computed by XXH3's 17–128-byte
/// algorithm (the 33–64-byte branch) with every 8-byte input read assembled from two
/// aligned words. No byte of it is stored and read back at another width, so no load waits
/// on a failed store-to-load forward, whenever it is hashed.
#[derive(Debug)]
pub struct ShortCheckBlock {
    /// The block's 64 bytes, then a zero word (so a read never needs a bounds branch).
    words: [u64; 9],
    len: usize,
}

/// XXH3's default secret, first 64 bytes, as little-endian words (xxHash's `kSecret`).
const XXH3_SECRET_WORDS: [u64; 8] = [
    0xbe4b_a423_396c_feb8,
    0x1cad_21f7_2c81_017c,
    0xdb97_9083_e96d_d4de,
    0x1f67_b3b7_a4a4_4072,
    0x78e5_c0cc_4ee6_79cb,
    0x2172_ffcc_7dd0_5a82,
    0x8e24_43f7_7446_08b8,
    0x4c26_3a81_e690_35e0,
];
const XXH3_PRIME64_1: u64 = 0x9E37_79B1_85EB_CA87;
const XXH3_PRIME_MX1: u64 = 0x1656_6791_9E37_79F9;

/// Up to 8 bytes as a little-endian word, zero-padded, read with at most two loads.
#[inline(always)]
fn le_word(bytes: &[u8]) -> u64 {
    let n = bytes.len().min(8);
    match n {
        0 => 0,
        1..=3 => {
            u64::from(bytes[0])
                | u64::from(bytes[n / 2]) << (8 * (n / 2))
                | u64::from(bytes[n - 1]) << (8 * (n - 1))
        }
        _ => {
            let lo = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            let hi = u32::from_le_bytes([bytes[n - 4], bytes[n - 3], bytes[n - 2], bytes[n - 1]]);
            // Overlapping bytes carry the same values in both halves: OR keeps them.
            u64::from(lo) | u64::from(hi) << (8 * (n - 4))
        }
    }
}

/// A topic of at most [`SHORT_CHECK_TOPIC`] bytes as the [`ShortCheckBlock`] holds it: its
/// 20 bytes, zero-padded, as five little-endian 32-bit words (block bytes 44..64). A
/// zero-copy reservation computes them once at claim time, from the caller's topic (where
/// the compiler often knows it, as it does for `send`), and builds the block from them at
/// commit ([`ShortCheckBlock::from_topic_words`]) without re-reading the topic.
pub type ShortTopicWords = [u32; 5];

/// The [`ShortTopicWords`] of `topic` (cut to [`SHORT_CHECK_TOPIC`] bytes).
#[inline(always)]
pub fn short_topic_words(topic: &[u8]) -> ShortTopicWords {
    let topic = &topic[..topic.len().min(SHORT_TOPIC)];
    let t = topic.len();
    let t0 = le_word(&topic[..t.min(8)]);
    let t1 = le_word(&topic[t.min(8)..t.min(16)]);
    let t2 = le_word(&topic[t.min(16)..]);
    [
        t0 as u32,
        (t0 >> 32) as u32,
        t1 as u32,
        (t1 >> 32) as u32,
        t2 as u32,
    ]
}

impl ShortCheckBlock {
    /// The block for `header`, `payload_hash` and `topic` (at most [`SHORT_CHECK_TOPIC`]
    /// bytes; longer topics are cut, so callers use [`LongCheckBlock`] for them).
    #[inline(always)]
    pub fn new(header: &FrameHeader, payload_hash: u64, topic: &[u8]) -> Self {
        let t = topic.len().min(SHORT_TOPIC);
        Self::from_topic_words(header, payload_hash, short_topic_words(topic), t)
    }

    /// The block for `header`, `payload_hash` and a topic of `topic_len` bytes (at most
    /// [`SHORT_CHECK_TOPIC`]; cut to it) given as its [`short_topic_words`]: the same block
    /// as [`Self::new`] with that topic.
    #[inline(always)]
    pub fn from_topic_words(
        header: &FrameHeader,
        payload_hash: u64,
        topic: ShortTopicWords,
        topic_len: usize,
    ) -> Self {
        let [w0, w1, w2, w3, w4] = check_block_words(header, payload_hash);
        let [a, b, c, d, e] = topic.map(u64::from);
        let words = [
            w0,
            w1,
            w2,
            w3,
            w4,
            // Bytes 40..64: the hash's high half, then the topic from byte 44.
            payload_hash >> 32 | a << 32,
            b | c << 32,
            d | e << 32,
            0,
        ];
        ShortCheckBlock {
            words,
            len: CHECK_BLOCK_FIXED + topic_len.min(SHORT_TOPIC),
        }
    }

    /// The 8 bytes at `offset` (`offset + 8 <= len`).
    #[inline(always)]
    fn read(&self, offset: usize) -> u64 {
        let k = (offset / 8) & 7;
        let pair = u128::from(self.words[k]) | u128::from(self.words[k + 1]) << 64;
        (pair >> (8 * (offset % 8))) as u64
    }

    /// XXH3's 16-byte mix of the input at `offset` with secret words `s` and `s + 1`.
    #[inline(always)]
    fn mix16(&self, offset: usize, s: usize) -> u64 {
        let a = self.read(offset) ^ XXH3_SECRET_WORDS[s];
        let b = self.read(offset + 8) ^ XXH3_SECRET_WORDS[s + 1];
        let product = u128::from(a) * u128::from(b);
        product as u64 ^ (product >> 64) as u64
    }

    /// The check: low 32 bits of xxh3_64 (seed 0) of the block's `len` (44..=64) bytes.
    #[inline(always)]
    pub fn hash(&self) -> u32 {
        let len = self.len;
        let mut acc = (len as u64).wrapping_mul(XXH3_PRIME64_1);
        acc = acc.wrapping_add(self.mix16(16, 4));
        acc = acc.wrapping_add(self.mix16(len - 32, 6));
        acc = acc.wrapping_add(self.mix16(0, 0));
        acc = acc.wrapping_add(self.mix16(len - 16, 2));
        acc ^= acc >> 37;
        acc = acc.wrapping_mul(XXH3_PRIME_MX1);
        acc ^= acc >> 32;
        acc as u32
    }
}
/// The check block for any topic.
pub type LongCheckBlock = CheckBlock<{ CHECK_BLOCK_FIXED + MAX_TOPIC_LEN }>;

/// [`frame_check`] of a frame whose topic and payload lie back to back in `body`, as in the
/// ring and in a reader's copy: the first `header.topic_len` bytes are the topic.
#[inline]
pub fn frame_check_body(header: &FrameHeader, body: &[u8]) -> u32 {
    let (topic, payload) = body.split_at(usize::from(header.topic_len).min(body.len()));
    frame_check(header, topic, payload)
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

/// A frame header from exactly [`FRAME_HEADER_LEN`] bytes: infallible (every bit pattern
/// is a header; [`check_header`] judges it), and a plain move, with no length check.
#[inline]
pub fn frame_header_from(bytes: [u8; FRAME_HEADER_LEN]) -> FrameHeader {
    zerocopy::transmute!(bytes)
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
    if frame_check_body(&header, body) != header.check {
        return Err(HeaderCheck::Malformed);
    }
    if std::str::from_utf8(&body[..usize::from(meta.topic_len)]).is_err() {
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

    #[test]
    fn xxh3_matches_a_second_implementation_on_every_path() {
        // Lengths cover every XXH3 branch (0, 1-3, 4-8, 9-16, 17-128, 129-240, and the
        // long, vectorised path with its stripe and block boundaries).
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in (0..=300).chain([511, 512, 513, 1023, 1024, 1025, 4096, 4105, 5000]) {
            assert_eq!(
                xxh3_64(&data[..len]),
                xxhash_rust::xxh3::xxh3_64(&data[..len]),
                "len {len}"
            );
        }
    }

    #[test]
    fn v2_check_is_the_spec_formula() {
        let topic = b"cpu";
        let payload = b"hello world";
        let mut header = FrameHeader {
            commit: 4096 | STATE_COMMITTED,
            seq: 9,
            timestamp_ns: 7,
            payload_len: payload.len() as u32,
            producer_id: 3,
            topic_len: topic.len() as u16,
            flags: 0,
            check: 0,
        };
        // The spec's formula, with a second XXH3 implementation.
        let spec = |header: &FrameHeader, topic: &[u8], payload: &[u8]| {
            let mut bytes = header.as_bytes()[..36].to_vec();
            bytes[..8].copy_from_slice(&(header.commit & !STATE_MASK).to_le_bytes());
            bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
            bytes.extend_from_slice(topic);
            xxhash_rust::xxh3::xxh3_64(&bytes) as u32
        };
        let body = [&topic[..], &payload[..]].concat();
        for (commit, flags, covered_topic, covered_payload) in [
            (4096 | STATE_COMMITTED, 0, &topic[..], &payload[..]),
            (
                4096 | STATE_COMMITTED,
                FLAG_PAYLOAD_UNCHECKED,
                &topic[..],
                &[][..],
            ),
            (4096 | STATE_DISCARDED, 0, &[][..], &[][..]),
        ] {
            header.commit = commit;
            header.flags = flags;
            let expected = spec(&header, covered_topic, covered_payload);
            assert_eq!(frame_check(&header, topic, payload), expected);
            assert_eq!(frame_check_body(&header, &body), expected);
        }
    }

    #[test]
    fn short_check_block_is_xxh3_of_the_block_bytes() {
        let bytes: Vec<u8> = (0..400u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        for start in 0..40 {
            for t in 0..=SHORT_CHECK_TOPIC {
                let topic = &bytes[start..start + t];
                let header = FrameHeader {
                    commit: 0x0807_0605_0403_0201 + start as u64 * 8,
                    seq: u64::from_le_bytes(
                        bytes[start + 100..start + 108].try_into().expect("8 bytes"),
                    ),
                    timestamp_ns: u64::MAX - start as u64,
                    payload_len: 0x0102_0304 * start as u32,
                    producer_id: 0xfedc_ba98,
                    topic_len: t as u16,
                    flags: start as u16,
                    check: 0,
                };
                let payload_hash = 0x1122_3344_5566_7788u64.rotate_left(start as u32);
                let block = CheckBlock::<64>::new(&header, payload_hash, topic);
                let short = ShortCheckBlock::new(&header, payload_hash, topic);
                assert_eq!(short.hash(), block.hash(), "start {start} topic {t}");
                let from_words = ShortCheckBlock::from_topic_words(
                    &header,
                    payload_hash,
                    short_topic_words(topic),
                    t,
                );
                assert_eq!(from_words.hash(), block.hash(), "start {start} topic {t}");
                assert_eq!(
                    short.hash(),
                    xxhash_rust::xxh3::xxh3_64(&block.block[..block.len]) as u32
                );
            }
        }
    }

    #[test]
    fn tail_words_are_the_header_bytes() {
        let header = FrameHeader {
            commit: 0x1122_3344_5566_7781,
            seq: 0x0102_0304_0506_0708,
            timestamp_ns: 0xa1a2_a3a4_a5a6_a7a8,
            payload_len: 0xb1b2_b3b4,
            producer_id: 0xc1c2_c3c4,
            topic_len: 0xd1d2,
            flags: 0xe1e2,
            check: 0xf1f2_f3f4,
        };
        let words: Vec<u8> = header
            .tail_words()
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_eq!(&words[..], &header.as_bytes()[8..]);
    }

    proptest! {
        #[test]
        fn two_buffer_and_contiguous_checks_agree(
            topic in proptest::collection::vec(any::<u8>(), 1..255),
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            unchecked in any::<bool>(),
        ) {
            let header = FrameHeader {
                commit: 8192 | STATE_COMMITTED,
                seq: 1,
                timestamp_ns: 2,
                payload_len: payload.len() as u32,
                producer_id: 4,
                topic_len: topic.len() as u16,
                flags: if unchecked { FLAG_PAYLOAD_UNCHECKED } else { 0 },
                check: 0,
            };
            let body = [&topic[..], &payload[..]].concat();
            prop_assert_eq!(frame_check(&header, &topic, &payload), frame_check_body(&header, &body));
        }

        #[test]
        fn check_is_the_spec_formula_for_any_header(
            pos in any::<u64>(),
            state in prop_oneof![Just(STATE_COMMITTED), Just(STATE_DISCARDED)],
            seq in any::<u64>(),
            timestamp_ns in any::<u64>(),
            producer_id in any::<u32>(),
            flags in any::<u16>(),
            topic in proptest::collection::vec(any::<u8>(), 1..=MAX_TOPIC_LEN),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let header = FrameHeader {
                commit: (pos & !STATE_MASK) | state,
                seq,
                timestamp_ns,
                payload_len: payload.len() as u32,
                producer_id,
                topic_len: topic.len() as u16,
                flags,
                check: 0xdead_beef,
            };
            let discarded = state == STATE_DISCARDED;
            let covered_payload: &[u8] =
                if discarded || flags & FLAG_PAYLOAD_UNCHECKED != 0 { &[] } else { &payload };
            let covered_topic: &[u8] = if discarded { &[] } else { &topic };
            // The spec's formula over the header's bytes, with a second XXH3 implementation.
            let mut bytes = header.as_bytes()[..36].to_vec();
            bytes[..8].copy_from_slice(&(header.commit & !STATE_MASK).to_le_bytes());
            bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(covered_payload).to_le_bytes());
            bytes.extend_from_slice(covered_topic);
            let expected = xxhash_rust::xxh3::xxh3_64(&bytes) as u32;
            prop_assert_eq!(frame_check(&header, &topic, &payload), expected);
        }

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
