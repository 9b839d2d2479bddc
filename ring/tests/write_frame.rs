//! `copy_to_ring` (plain below `STREAMING_COPY_MIN`, streaming stores at and above it) and
//! `WritableRing::write_frame` (the producer's `send`), checked byte for byte: every length
//! around the threshold and up to past 4 KiB, destinations at every offset within a cache
//! line, the bytes around the destination untouched, and whole frames read back and
//! validated by the sidecar's `RingReader` from a real memfd ring.

use std::sync::Arc;

use ringside_ring::layout::RingHeader;
use ringside_ring::shm::{STREAMING_COPY_MIN, copy_to_ring, create_ring_memfd};
use ringside_ring::writer::{FrameHeaderFields, WritableRing};
use ringside_ring::{ReadStep, ReaderOptions, RingConfig, RingReader, RingView, StartAt, VecSink};

fn pattern(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(salt).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Copies `len` bytes into a canary-filled buffer at `offset` (from a 64-byte aligned base)
/// and checks the copy and both canaries.
fn check_copy(len: usize, offset: usize, src_offset: usize) {
    const CANARY: u8 = 0xa5;
    // A 64-aligned backing store: a Vec of u128 has 16-byte alignment; take the first
    // 64-aligned byte inside it.
    let mut backing = vec![0u128; (len + 256) / 16 + 8];
    let bytes: &mut [u8] = bytemuck_bytes(&mut backing);
    let base = bytes.as_ptr().align_offset(64);
    let area = &mut bytes[base..base + len + 128];
    area.fill(CANARY);
    let src_all = pattern(len + src_offset, len as u32);
    let src = &src_all[src_offset..];
    copy_to_ring(&mut area[offset..offset + len], src);
    assert_eq!(
        &area[offset..offset + len],
        src,
        "len {len} offset {offset}"
    );
    assert!(
        area[..offset].iter().all(|&b| b == CANARY),
        "len {len} offset {offset}: bytes before the destination changed"
    );
    assert!(
        area[offset + len..].iter().all(|&b| b == CANARY),
        "len {len} offset {offset}: bytes after the destination changed"
    );
}

/// The bytes of a u128 slice (safe: every byte pattern is a valid u8 and u128).
fn bytemuck_bytes(words: &mut [u128]) -> &mut [u8] {
    use zerocopy::IntoBytes;
    words.as_mut_bytes()
}

#[test]
fn copy_to_ring_copies_every_length_at_every_alignment() {
    // Every length from 0 to past 4 KiB, at line-start, odd and near-line-end destinations
    // and an unaligned source.
    for len in 0..=4096 + 130 {
        for offset in [0, 1, 8, 63] {
            check_copy(len, offset, (len + offset) % 7);
        }
    }
    // Around the threshold and at larger sizes, every destination offset within a line.
    let around = STREAMING_COPY_MIN;
    for len in [
        around - 1,
        around,
        around + 1,
        around + 63,
        4096,
        8191,
        65_536 + 3,
    ] {
        for offset in 0..64 {
            check_copy(len, offset, offset % 5);
        }
    }
}

#[test]
fn write_frame_reads_back_exactly_through_the_reader() {
    let config = RingConfig {
        capacity: 1 << 20,
        max_payload: 64 * 1024,
    };
    let header = RingHeader::new(&config, 77, 1);
    let fd = create_ring_memfd(&config, &header).expect("memfd ring");
    let view = Arc::new(RingView::open(fd.try_clone().expect("dup")).expect("view"));
    let ring = WritableRing::open(fd, 77, config).expect("writable ring");
    let mut reader =
        RingReader::new(view, StartAt::Earliest, ReaderOptions::default()).expect("reader");
    let mut sink = VecSink::default();
    let long_topic = "t".repeat(200);
    let lens = [
        0,
        1,
        7,
        64,
        1000,
        STREAMING_COPY_MIN - 1,
        STREAMING_COPY_MIN,
        STREAMING_COPY_MIN + 5,
        4096,
        4099,
        64 * 1024,
    ];
    let mut seq = 0;
    // Twice round the ring's capacity, so frames start at many alignments and wrap.
    for round in 0..40u32 {
        for (i, &len) in lens.iter().enumerate() {
            let topic = match (round + i as u32) % 3 {
                0 => "cpu",
                1 => "a/topic/of/exactly/20",
                _ => long_topic.as_str(),
            };
            let payload = pattern(len, round * 31 + i as u32);
            let fields = FrameHeaderFields {
                producer_id: 5,
                timestamp_ns: u64::from(round) * 1000 + i as u64,
                flags: if (round + i as u32) % 5 == 4 {
                    ringside_ring::layout::FLAG_PAYLOAD_UNCHECKED
                } else {
                    0
                },
            };
            ring.write_frame(topic.as_bytes(), &payload, fields);
            match reader.read(&mut sink) {
                ReadStep::Frame(meta) => {
                    assert_eq!(meta.seq, seq);
                    assert_eq!(meta.timestamp_ns, fields.timestamp_ns);
                    assert_eq!(meta.producer_id, 5);
                }
                other => panic!("round {round} len {len} topic {topic}: {other:?}"),
            }
            assert_eq!(sink.topic(), topic.as_bytes());
            assert_eq!(sink.payload(), &payload[..], "round {round} len {len}");
            seq += 1;
        }
    }
}

/// `claim_frame` + fill in place + `publish_frame` (the zero-copy reservation's path, which
/// builds a short topic's check from words taken at claim time): every topic length around
/// the short block's limit and the word boundaries inside it, read back and validated by the
/// reader; a discarded claim in between is skipped.
#[test]
fn claimed_frames_read_back_exactly_through_the_reader() {
    let config = RingConfig {
        capacity: 1 << 20,
        max_payload: 64 * 1024,
    };
    let header = RingHeader::new(&config, 78, 1);
    let fd = create_ring_memfd(&config, &header).expect("memfd ring");
    let view = Arc::new(RingView::open(fd.try_clone().expect("dup")).expect("view"));
    let ring = WritableRing::open(fd, 78, config).expect("writable ring");
    let mut reader =
        RingReader::new(view, StartAt::Earliest, ReaderOptions::default()).expect("reader");
    let mut sink = VecSink::default();
    let letters = "abcdefghijklmnopqrstuvwxyz0123456789".repeat(8);
    let topic_lens = [1, 2, 3, 4, 7, 8, 9, 12, 15, 16, 17, 19, 20, 21, 22, 64, 255];
    let payload_lens = [0, 1, 64, 1000, 4099];
    let mut seq = 0;
    for round in 0..30u32 {
        for (i, &topic_len) in topic_lens.iter().enumerate() {
            let topic = &letters[i..i + topic_len];
            let len = payload_lens[(round as usize + i) % payload_lens.len()];
            let payload = pattern(len, round * 17 + i as u32);
            let fields = FrameHeaderFields {
                producer_id: 6,
                timestamp_ns: u64::from(round) * 1000 + i as u64,
                flags: if (round + i as u32) % 5 == 4 {
                    ringside_ring::layout::FLAG_PAYLOAD_UNCHECKED
                } else {
                    0
                },
            };
            if (round + i as u32) % 7 == 3 {
                // A discarded claim: readers skip it.
                let frame = ring.claim_frame(topic.as_bytes(), len);
                ring.discard_frame(frame, fields);
                seq += 1;
            }
            let mut frame = ring.claim_frame(topic.as_bytes(), len);
            assert_eq!(frame.payload_len(), len);
            frame.payload_mut().copy_from_slice(&payload);
            ring.publish_frame(frame, fields);
            let meta = loop {
                match reader.read(&mut sink) {
                    ReadStep::Frame(meta) => break meta,
                    ReadStep::Filtered(_) => {}
                    other => panic!("round {round} topic {topic_len} len {len}: {other:?}"),
                }
            };
            assert_eq!(meta.seq, seq, "round {round} topic {topic_len}");
            assert_eq!(meta.timestamp_ns, fields.timestamp_ns);
            assert_eq!(sink.topic(), topic.as_bytes());
            assert_eq!(sink.payload(), &payload[..], "round {round} len {len}");
            seq += 1;
        }
    }
}
