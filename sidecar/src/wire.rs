//! Protobuf wire-format primitives for hand-encoding `ringside.v1` messages.
//!
//! The sidecar never builds prost structs per frame: it writes tags, varints
//! and lengths itself, straight into the outgoing gRPC buffer. The field
//! numbers here must match `proto/ringside/v1/ringside.proto`; the unit tests
//! in `batch.rs` decode our bytes with the prost-generated types to prove it.

use std::ops::IndexMut;

/// Wire type of varint fields (`uint64`, `uint32`, `bool`, enums).
pub const WIRE_VARINT: u8 = 0;
/// Wire type of 64-bit fixed fields (`fixed64`).
pub const WIRE_FIXED64: u8 = 1;
/// Wire type of length-delimited fields (`string`, `bytes`, messages).
pub const WIRE_LEN: u8 = 2;

/// Maximum encoded length of a varint (a `u64`).
pub const MAX_VARINT_LEN: usize = 10;

/// Length of the gRPC message prefix (defined with the request decoding).
pub use crate::request::GRPC_PREFIX_LEN;

/// Field numbers of `ringside.v1.Batch`.
pub mod batch {
    /// `fixed64 ring_id = 1`
    pub const RING_ID: u32 = 1;
    /// `repeated Frame frames = 2`
    pub const FRAMES: u32 = 2;
    /// `repeated Loss losses = 3`
    pub const LOSSES: u32 = 3;
    /// `uint64 resume_seq = 4`
    pub const RESUME_SEQ: u32 = 4;
    /// `uint64 from_seq = 5`
    pub const FROM_SEQ: u32 = 5;
    /// `uint64 filtered = 6`
    pub const FILTERED: u32 = 6;
    /// `uint64 discarded = 7`
    pub const DISCARDED: u32 = 7;
    /// `bytes filler = 8`
    pub const FILLER: u32 = 8;
}

/// Field numbers of `ringside.v1.Frame`.
pub mod frame {
    /// `uint64 seq = 1`
    pub const SEQ: u32 = 1;
    /// `uint64 timestamp_ns = 2`
    pub const TIMESTAMP_NS: u32 = 2;
    /// `string topic = 3`
    pub const TOPIC: u32 = 3;
    /// `uint32 producer_id = 4`
    pub const PRODUCER_ID: u32 = 4;
    /// `bytes payload = 5`
    pub const PAYLOAD: u32 = 5;
}

/// Field numbers of `ringside.v1.Loss`.
pub mod loss {
    /// `LossReason reason = 1`
    pub const REASON: u32 = 1;
    /// `uint64 frames = 2`
    pub const FRAMES: u32 = 2;
    /// `uint64 first_seq = 3`
    pub const FIRST_SEQ: u32 = 3;
}

/// The one-byte key of a field numbered below 16.
///
/// # Panics
///
/// At compile time, when `field` does not fit a one-byte key (field numbers 1 to 15).
pub const fn key(field: u32, wire_type: u8) -> u8 {
    assert!(field > 0 && field < 16, "one-byte keys only");
    ((field as u8) << 3) | wire_type
}

/// Number of bytes `value` takes as a varint.
pub const fn varint_len(value: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 takes one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Writes `value` as a varint at the start of `out` and returns the number of
/// bytes written. `out` must hold at least [`varint_len`]`(value)` bytes.
pub fn write_varint(out: &mut [u8], value: u64) -> usize {
    put_varint(out, 0, value)
}

/// Writes a varint field (key then value) and returns the bytes written.
pub fn write_varint_field(out: &mut [u8], field: u32, value: u64) -> usize {
    put_varint_field(out, 0, field, value)
}

/// Encoded size of a varint field with a one-byte key.
pub const fn varint_field_len(value: u64) -> usize {
    1 + varint_len(value)
}

/// Writes the key and length prefix of a length-delimited field and returns
/// the bytes written.
pub fn write_len_prefix(out: &mut [u8], field: u32, len: usize) -> usize {
    put_len_prefix(out, 0, field, len)
}

/// Encoded size of a length-delimited field with a one-byte key and `len`
/// content bytes.
pub const fn len_field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Writes `value` as a varint into `out` at `at` and returns the offset after it. Generic
/// over the buffer so that a caller with a fixed array (sized for the largest value) gets
/// the per-byte bounds check compiled to a compare against a constant; the `write_*`
/// functions are the same code on a slice.
#[inline(always)]
pub fn put_varint<B>(out: &mut B, mut at: usize, mut value: u64) -> usize
where
    B: IndexMut<usize, Output = u8> + ?Sized,
{
    while value >= 0x80 {
        out[at] = (value as u8) | 0x80;
        value >>= 7;
        at += 1;
    }
    out[at] = value as u8;
    at + 1
}

/// The low 56 bits of `value` spread into 8 bytes of 7 bits each (group `k`, bits
/// `7k..7k+7`, to byte `k`), continuation bits clear: a varint's bytes without their tags.
#[inline(always)]
const fn spread7(value: u64) -> u64 {
    // Groups 4..7 move up 4 bits, then groups 2, 3 (of each 32-bit half) 2 bits, then the
    // odd groups (of each 16-bit quarter) 1 bit: each group moves by its index.
    let v = (value & 0x0000_0000_0FFF_FFFF) | ((value & 0x00FF_FFFF_F000_0000) << 4);
    let v = (v & 0x0000_3FFF_0000_3FFF) | ((v & 0x0FFF_C000_0FFF_C000) << 2);
    (v & 0x007F_007F_007F_007F) | ((v & 0x3F80_3F80_3F80_3F80) << 1)
}

/// [`put_varint`] for fields written in sequence into a scratch array: a value of 2 to 8
/// varint bytes is written with one 8-byte store (no loop, one bounds check), a larger one
/// (a nanosecond timestamp takes 9) with one store and one or two bytes. It may overwrite
/// up to 8 bytes from `at` beyond the varint's end (inside `out`), so use it only where
/// the next write starts at the returned offset or those bytes are scratch. Falls back to
/// [`put_varint`] when `out` has fewer than 8 bytes from `at`.
#[inline(always)]
pub fn put_varint_run(out: &mut [u8], at: usize, value: u64) -> usize {
    if value < 0x80 {
        out[at] = value as u8;
        return at + 1;
    }
    let Some(word) = out.get_mut(at..at + 8) else {
        return put_varint(out, at, value);
    };
    if value < 1 << 56 {
        let len = varint_len(value);
        // Continuation bits on every byte but the last (len is 2..=8 here).
        let more = 0x8080_8080_8080_8080 & ((1u64 << (8 * (len - 1))) - 1);
        word.copy_from_slice(&(spread7(value) | more).to_le_bytes());
        return at + len;
    }
    word.copy_from_slice(&(spread7(value) | 0x8080_8080_8080_8080).to_le_bytes());
    put_varint(out, at + 8, value >> 56)
}

/// A varint field (key then value) at `at`; returns the offset after it.
#[inline(always)]
pub fn put_varint_field<B>(out: &mut B, at: usize, field: u32, value: u64) -> usize
where
    B: IndexMut<usize, Output = u8> + ?Sized,
{
    out[at] = key(field, WIRE_VARINT);
    put_varint(out, at + 1, value)
}

/// The key and length prefix of a length-delimited field at `at`; returns the offset
/// after it.
#[inline(always)]
pub fn put_len_prefix<B>(out: &mut B, at: usize, field: u32, len: usize) -> usize
where
    B: IndexMut<usize, Output = u8> + ?Sized,
{
    out[at] = key(field, WIRE_LEN);
    put_varint(out, at + 1, len as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_run_writes_the_same_bytes() {
        let mut values = vec![0u64, 1, 127, 128, 255, 300, 16_383, 16_384, u64::MAX];
        for bits in 1..64 {
            values.extend([(1u64 << bits) - 1, 1u64 << bits, (1u64 << bits) + 1]);
        }
        values.push(1_764_770_000_123_456_789);
        for v in values {
            let mut want = [0u8; MAX_VARINT_LEN];
            let n = write_varint(&mut want, v);
            // Room for the 8-byte store, and exactly the varint's room (the fallback).
            for room in [n + 8, n] {
                let mut got = vec![0xEEu8; room + 2];
                let end = put_varint_run(&mut got[..room + 1], 1, v);
                assert_eq!(end, 1 + n, "{v}: length");
                assert_eq!(&got[1..1 + n], &want[..n], "{v}: bytes (room {room})");
                assert_eq!(got[0], 0xEE, "{v}: nothing before `at`");
                assert_eq!(got[room + 1], 0xEE, "{v}: nothing past `out`");
            }
        }
    }

    #[test]
    fn varint_lengths_match_prost() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            assert_eq!(varint_len(v), prost::encoding::encoded_len_varint(v), "{v}");
            let mut buf = [0u8; MAX_VARINT_LEN];
            let n = write_varint(&mut buf, v);
            assert_eq!(n, varint_len(v));
            let mut slice = &buf[..n];
            assert_eq!(
                prost::encoding::decode_varint(&mut slice).expect("decodes"),
                v
            );
        }
    }
}
