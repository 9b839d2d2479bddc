//! `frame_decode`: arbitrary bytes through `ringside_ring::decode_frame` at an arbitrary
//! 8-aligned position and an arbitrary (valid) max payload.
//!
//! Input layout: `[mode u8][position u64 LE][max_payload u32 LE][rest]`.
//! - mode even: `rest` is decoded as-is (raw hostile bytes).
//! - mode odd: `rest` seeds a *valid* frame (header fields, topic, payload) whose check is
//!   computed with `raw::frame_check`; it must decode, and then a few input-chosen bytes are
//!   flipped and the damaged copy is decoded again (it may be accepted only if the damage
//!   missed every checked byte, which the target verifies).
//!
//! Invariants: never panics; an accepted frame names the requested position, respects the
//! limits, and fits inside the given bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringside_ring::layout::{FrameHeader, STATE_COMMITTED, STATE_DISCARDED, frame_check};
use ringside_ring::{FRAME_HEADER_LEN, FrameMeta, MAX_TOPIC_LEN, decode_frame};

/// The largest max payload the format allows (64 MiB).
const MAX_PAYLOAD_LIMIT: u32 = 64 * 1024 * 1024;

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = data.get(at + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fn header_bytes(h: &FrameHeader) -> [u8; FRAME_HEADER_LEN] {
    let mut out = [0u8; FRAME_HEADER_LEN];
    out[0..8].copy_from_slice(&h.commit.to_le_bytes());
    out[8..16].copy_from_slice(&h.seq.to_le_bytes());
    out[16..24].copy_from_slice(&h.timestamp_ns.to_le_bytes());
    out[24..28].copy_from_slice(&h.payload_len.to_le_bytes());
    out[28..32].copy_from_slice(&h.producer_id.to_le_bytes());
    out[32..34].copy_from_slice(&h.topic_len.to_le_bytes());
    out[34..36].copy_from_slice(&h.flags.to_le_bytes());
    out[36..40].copy_from_slice(&h.check.to_le_bytes());
    out
}

fn assert_sane(meta: &FrameMeta, bytes: &[u8], position: u64, max_payload: u32) {
    assert_eq!(
        meta.position, position,
        "accepted frame names another position"
    );
    assert!(meta.topic_len >= 1 && usize::from(meta.topic_len) <= MAX_TOPIC_LEN);
    assert!(meta.payload_len <= max_payload, "payload over max accepted");
    assert!(
        FRAME_HEADER_LEN + meta.body_len() <= bytes.len(),
        "accepted frame runs past the bytes given"
    );
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let mode = data[0];
    let position = u64_at(data, 1) & !7;
    let raw_max = u32::from_le_bytes([data[9], data[10], data[11], data[12]]);
    let max_payload = raw_max % MAX_PAYLOAD_LIMIT + 1;
    let rest = &data[13..];

    if mode & 1 == 0 {
        if let Ok(meta) = decode_frame(rest, position, max_payload) {
            assert_sane(&meta, rest, position, max_payload);
        }
        return;
    }

    // Structured mode: build a valid frame from the input.
    if rest.len() < 24 {
        return;
    }
    let topic_len = usize::from(rest[0]).clamp(1, MAX_TOPIC_LEN);
    let payload_len = usize::from(u16::from_le_bytes([rest[1], rest[2]])) % 2048;
    let payload_len = payload_len.min(max_payload as usize);
    let discarded = rest[3] & 1 == 1;
    let unchecked = rest[3] & 2 == 2;
    let seq = u64_at(rest, 4);
    let timestamp_ns = u64_at(rest, 12);
    let producer_id = u32::from_le_bytes([rest[20], rest[21], rest[22], rest[23]]);
    let body_src = &rest[24..];
    // Topic must be UTF-8: map every byte to ASCII.
    let topic: Vec<u8> = (0..topic_len)
        .map(|i| b'a' + body_src.get(i).copied().unwrap_or(0) % 26)
        .collect();
    let payload: Vec<u8> = if discarded {
        Vec::new()
    } else {
        (0..payload_len)
            .map(|i| body_src.get(topic_len + i).copied().unwrap_or(i as u8))
            .collect()
    };
    let mut header = FrameHeader {
        commit: position
            | if discarded {
                STATE_DISCARDED
            } else {
                STATE_COMMITTED
            },
        seq,
        timestamp_ns,
        payload_len: payload.len() as u32,
        producer_id,
        topic_len: topic_len as u16,
        flags: u16::from(unchecked),
        check: 0,
    };
    let body_topic: &[u8] = if discarded { &[] } else { &topic };
    header.check = frame_check(&header, body_topic, &payload);
    let mut frame = header_bytes(&header).to_vec();
    frame.extend_from_slice(&topic);
    frame.extend_from_slice(&payload);
    let frame_ok = decode_frame(&frame, position, max_payload);
    if discarded {
        // Discarded frames are checked on the header only; either outcome is allowed, but
        // never a panic, and an accepted one must be sane.
        if let Ok(meta) = frame_ok {
            assert_sane(&meta, &frame, position, max_payload);
        }
        return;
    }
    let meta = match frame_ok {
        Ok(meta) => meta,
        Err(e) => panic!("a valid frame was refused: {e:?}"),
    };
    assert_sane(&meta, &frame, position, max_payload);
    assert_eq!(meta.seq, seq);
    assert_eq!(meta.timestamp_ns, timestamp_ns);
    assert_eq!(meta.producer_id, producer_id);

    // Damage: flip input-chosen bytes; a damaged frame that still decodes must be one where
    // every flip landed outside the checked range (payload bytes of an unchecked frame).
    let flips = &body_src[(topic_len + payload_len).min(body_src.len())..];
    if flips.is_empty() {
        return;
    }
    let mut damaged = frame.clone();
    let mut touched_checked = false;
    for pair in flips.chunks(3).take(8) {
        let at =
            usize::from(u16::from_le_bytes([pair[0], *pair.get(1).unwrap_or(&0)])) % damaged.len();
        let mask = pair.get(2).copied().unwrap_or(1).max(1);
        damaged[at] ^= mask;
        let in_payload = at >= FRAME_HEADER_LEN + topic_len;
        if !(unchecked && in_payload) {
            touched_checked = true;
        }
    }
    if damaged == frame {
        return;
    }
    if let Ok(meta) = decode_frame(&damaged, position, max_payload) {
        assert_sane(&meta, &damaged, position, max_payload);
        if touched_checked {
            // xxh3 truncated to 32 bits: a collision is possible in principle (2^-32), and
            // flips can cancel out. Only report when the header/topic bytes really differ.
            let same_checked = if unchecked {
                damaged[..FRAME_HEADER_LEN + topic_len] == frame[..FRAME_HEADER_LEN + topic_len]
            } else {
                damaged == frame
            };
            assert!(
                same_checked,
                "a frame damaged in its checked bytes was accepted"
            );
        }
    }
});
