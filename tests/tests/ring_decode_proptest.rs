//! Property tests: arbitrary bytes through the reader's frame decoding (`decode_frame`), and
//! arbitrary bytes written over a live ring through the whole reader. (The client crate has
//! its own in `client/src/layout.rs`: `arbitrary_bytes_never_panic`,
//! `any_single_bit_flip_is_caught`.)

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use ringside_client::Producer;
use ringside_ring::layout::{FrameHeader, STATE_COMMITTED, frame_check};
use ringside_ring::{
    FRAME_HEADER_LEN, HostOptions, ReaderOptions, RingConfig, RingHost, RingReader, StartAt,
    VecSink, decode_frame,
};
use ringside_tests::ring_support::{
    FLAG_AFTER, HostileProducer, TOPIC, Tally, TestPayload, encode_payload, payload_len,
    socket_path,
};
/// The header's bytes, little-endian `repr(C)` as in docs/ring-format.md (this crate does
/// not depend on zerocopy).
fn as_bytes(h: &FrameHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(&h.commit.to_le_bytes());
    out.extend_from_slice(&h.seq.to_le_bytes());
    out.extend_from_slice(&h.timestamp_ns.to_le_bytes());
    out.extend_from_slice(&h.payload_len.to_le_bytes());
    out.extend_from_slice(&h.producer_id.to_le_bytes());
    out.extend_from_slice(&h.topic_len.to_le_bytes());
    out.extend_from_slice(&h.flags.to_le_bytes());
    out.extend_from_slice(&h.check.to_le_bytes());
    out
}

fn encode(position: u64, seq: u64, topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut header = FrameHeader {
        commit: position | STATE_COMMITTED,
        seq,
        timestamp_ns: 42,
        payload_len: payload.len() as u32,
        producer_id: 9,
        topic_len: topic.len() as u16,
        flags: 0,
        check: 0,
    };
    header.check = frame_check(&header, topic, payload);
    let mut out = as_bytes(&header);
    assert_eq!(out.len(), FRAME_HEADER_LEN);
    out.extend_from_slice(topic);
    out.extend_from_slice(payload);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the decoder, and whatever it accepts is self-consistent
    /// and within bounds.
    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_frames_are_bounded(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        pos in any::<u64>(),
        max_payload in 0u32..4096,
    ) {
        let position = pos & !7;
        if let Ok(meta) = decode_frame(&bytes, position, max_payload) {
            prop_assert!(meta.payload_len <= max_payload);
            prop_assert!(FRAME_HEADER_LEN + meta.body_len() <= bytes.len());
            prop_assert_eq!(meta.position, position);
        }
    }

    /// A valid frame with an arbitrary header claiming a huge length never makes the decoder
    /// read or allocate past max payload; arbitrary bytes appended to a valid frame do not
    /// change what it decodes to.
    #[test]
    fn valid_frames_decode_and_any_corruption_is_rejected(
        topic in "[a-z.]{1,40}",
        payload in proptest::collection::vec(any::<u8>(), 0..600),
        pos in 0u64..(1 << 40),
        seq in any::<u64>(),
        trailing in proptest::collection::vec(any::<u8>(), 0..64),
        flip_at in any::<usize>(),
        flip_mask in 1u8..=255,
    ) {
        let position = pos & !7;
        let mut bytes = encode(position, seq, topic.as_bytes(), &payload);
        let frame_len = bytes.len();
        bytes.extend_from_slice(&trailing);
        let meta = decode_frame(&bytes, position, 1024).expect("a valid frame decodes");
        prop_assert_eq!(meta.seq, seq);
        prop_assert_eq!(meta.payload_len as usize, payload.len());
        // Any damage within the frame is rejected (32-bit check: a false accept has
        // probability 2^-32 per case).
        let at = flip_at % frame_len;
        bytes[at] ^= flip_mask;
        prop_assert!(decode_frame(&bytes, position, 1024).is_err());
        // The same frame found at another position (a stale lap) never decodes.
        bytes[at] ^= flip_mask;
        prop_assert!(decode_frame(&bytes, position + (1 << 16), 1024).is_err());
    }
}

fn host(case: u64) -> (RingHost, std::path::PathBuf) {
    let path = socket_path(&format!("prop-{case}"));
    let host = RingHost::start(HostOptions {
        socket_path: path.clone(),
        ring: RingConfig {
            capacity: 64 * 1024,
            max_payload: 1024,
        },
        adopt_grace: Duration::ZERO,
        ..HostOptions::default()
    })
    .expect("host");
    (host, path)
}

fn send(producer: &Producer, index: u32, seq: u64, flags: u8) {
    let mut buf = vec![0u8; payload_len(index, seq, 120)];
    encode_payload(
        &mut buf,
        TestPayload {
            producer: index,
            seq,
            flags,
        },
    );
    producer.send(TOPIC, &buf).expect("send");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Arbitrary bytes written at an arbitrary offset over a live ring, between genuine
    /// frames: the reader never panics, never delivers an invalid frame, accounts for every
    /// sequence number, and delivers every genuine frame written after the garbage.
    #[test]
    fn arbitrary_bytes_over_a_live_ring(
        before in 0u64..600,
        garbage in proptest::collection::vec(any::<u8>(), 1..20_000),
        offset in 0u64..(64 * 1024),
        after in 1u64..200,
        read_between in any::<bool>(),
    ) {
        static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let case = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (host, path) = host(case);
        let producer = Producer::connect(&path).expect("connect");
        prop_assert!(producer.wait_connected(Duration::from_secs(5)));
        let ring = host.ring();
        let mut reader = RingReader::new(Arc::clone(&ring), StartAt::Earliest, ReaderOptions {
            stall_timeout: Duration::from_millis(1),
        }).expect("reader");
        let mut tally = Tally::default();
        let mut sink = VecSink::default();
        for seq in 0..before {
            send(&producer, 0, seq, 0);
        }
        if read_between {
            prop_assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(5)));
        }
        let hostile = HostileProducer::attach(&path).expect("hostile producer attaches");
        hostile.ring.overwrite(offset, &garbage);
        for seq in 0..after {
            send(&producer, 1, seq, FLAG_AFTER);
        }
        prop_assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(5)));
        prop_assert!(tally.errors.is_empty(), "{:?}", tally.errors);
        let written = before + after;
        prop_assert_eq!(tally.next_ring_seq, written);
        prop_assert_eq!(tally.delivered + tally.lost_total(), written);
        let seen = tally.producers.get(&1).copied().unwrap_or_default();
        prop_assert_eq!(seen.delivered, after, "every frame written after the garbage is read");
    }
}
