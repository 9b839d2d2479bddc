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
