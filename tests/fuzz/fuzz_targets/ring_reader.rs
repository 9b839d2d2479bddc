//! `ring_reader`: arbitrary bytes written over a real, small ring, then a `RingReader` from
//! every start position drains it.
//!
//! Setup (once per process): a sealed memfd ring from `raw::create_ring_memfd` (64 KiB data,
//! 1 KiB max payload), mapped writable as a producer would (`raw::WritableRing`) and
//! read-only as the sidecar does (`RingView`), plus a spare fd used to `pwrite` raw bytes.
//!
//! Per input: the data region and claim word are zeroed; genuine frames described by the
//! input are claimed and published (some discarded, some left claimed but never committed,
//! as a killed producer would); then input-chosen raw writes land anywhere in the data region
//! or over the claim word (forged positions and sequences). Readers starting at `Earliest`,
//! `Latest`, `Sequence(n)` and `TimestampNs(t)` then read until idle.
//!
//! Invariants: no panic; a bounded number of reads reaches Idle (no livelock); sequence
//! numbers of deliveries and losses only move forward and never overlap (no duplicates),
//! except a one-frame corrupt loss under a stale sequence (ring-format.md §5.1 step 4);
//! every delivered frame's bytes, copied again from the ring, pass `decode_frame` and equal
//! what the sink received.
#![no_main]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nix::sys::uio::{pread, pwrite};
use ringside_ring::layout::{CLAIM_OFFSET, HEADER_REGION_LEN, RingHeader};
use ringside_ring::shm::create_ring_memfd;
use ringside_ring::writer::{FrameHeaderFields, WritableRing};
use ringside_ring::{FRAME_HEADER_LEN, LossReason, ReadStep, ReaderOptions, RingConfig, RingReader, RingView, StartAt, VecSink, decode_frame};

const CAPACITY: u64 = 64 * 1024;
const MAX_PAYLOAD: u32 = 1024;
const RING_ID: u64 = 0x5eed_f00d;
/// Reads allowed per reader before the target calls it a livelock. A 64 KiB ring holds at
/// most 1365 frames (48 bytes minimum), each read step delivers, loses or skips at least
/// one, and a stalled-frame scan covers 64 KiB per call; 20k steps is a wide margin.
const MAX_STEPS: usize = 20_000;

struct Rig {
    writer: WritableRing,
    view: Arc<RingView>,
    raw: OwnedFd,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let config = RingConfig {
            capacity: CAPACITY,
            max_payload: MAX_PAYLOAD,
        };
        let header = RingHeader::new(&config, RING_ID, 1);
        let fd = create_ring_memfd(&config, &header).expect("memfd ring");
        let raw = fd.try_clone().expect("dup");
        let view_fd = fd.try_clone().expect("dup");
        let writer = WritableRing::open(fd, RING_ID, config).expect("writable ring");
        let view = Arc::new(RingView::open(view_fd).expect("read-only view"));
        Rig { writer, view, raw }
    })
}

/// A byte cursor over the fuzz input that yields zeros once exhausted.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let start = self.at.min(self.data.len());
        let end = (self.at + n).min(self.data.len());
        self.at += n;
        &self.data[start..end]
    }
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

fn pwrite_all(fd: &OwnedFd, bytes: &[u8], offset: u64) {
    let mut done = 0;
    while done < bytes.len() {
        let n = pwrite(fd.as_fd(), &bytes[done..], (offset + done as u64) as i64).expect("pwrite");
        done += n;
    }
}

/// Writes raw bytes into the data region at `offset` (mod capacity), wrapping.
fn scribble(fd: &OwnedFd, offset: u64, bytes: &[u8]) {
    let mut off = offset % CAPACITY;
    let mut rest = bytes;
    while !rest.is_empty() {
        let room = (CAPACITY - off) as usize;
        let (now, later) = rest.split_at(room.min(rest.len()));
        pwrite_all(fd, now, HEADER_REGION_LEN + off);
        rest = later;
        off = 0;
    }
}

/// Copies `len` bytes of the ring starting at absolute position `pos`, wrapping.
fn copy_ring(fd: &OwnedFd, pos: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut off = pos % CAPACITY;
    let mut filled = 0;
    while filled < len {
        let room = (CAPACITY - off) as usize;
        let take = room.min(len - filled);
        let mut got = 0;
        while got < take {
            let n = pread(
                fd.as_fd(),
                &mut out[filled + got..filled + take],
                (HEADER_REGION_LEN + off) as i64 + got as i64,
            )
            .expect("pread");
            assert!(n > 0, "short read of the ring");
            got += n;
        }
        filled += take;
        off = 0;
    }
    out
}

fn reset(rig: &Rig) {
    static ZEROS: [u8; CAPACITY as usize] = [0u8; CAPACITY as usize];
    pwrite_all(&rig.raw, &ZEROS, HEADER_REGION_LEN);
    pwrite_all(&rig.raw, &[0u8; 16], CLAIM_OFFSET as u64);
}

fn drain(rig: &Rig, start: StartAt) {
    let Ok(mut reader) = RingReader::new(
        Arc::clone(&rig.view),
        start,
        ReaderOptions {
            stall_timeout: Duration::ZERO,
        },
    ) else {
        return;
    };
    let mut sink = VecSink::default();
    // Lowest sequence number not yet delivered or reported lost. A resume from a sequence
    // older than the oldest retained frame positions the cursor at the oldest one and
    // reports the difference as lapped first (ring-format.md §5.6), so it starts there.
    let mut expected = match start {
        StartAt::Sequence(s) => s.min(reader.next_seq()),
        _ => reader.next_seq(),
    };
    for _ in 0..MAX_STEPS {
        match reader.read(&mut sink) {
            ReadStep::Idle => return,
            ReadStep::Pending => {}
            ReadStep::Filtered(_) => panic!("VecSink filters nothing"),
            ReadStep::Loss(loss) => {
                assert!(loss.frames > 0, "empty loss reported: {loss:?}");
                if loss.first_seq < expected {
                    // ring-format.md §5.1 step 4: a frame whose sequence a forged claim word
                    // rewound is skipped and reported alone, under its own (stale) sequence.
                    assert!(
                        loss.frames == 1 && loss.reason == LossReason::Corrupt,
                        "loss {loss:?} overlaps sequences already accounted (next {expected})"
                    );
                    continue;
                }
                assert!(
                    loss.first_seq >= expected,
                    "loss {loss:?} overlaps sequences already accounted (next {expected})"
                );
                expected = loss.first_seq.saturating_add(loss.frames);
            }
            ReadStep::Frame(meta) => {
                assert!(
                    meta.seq >= expected,
                    "frame seq {} delivered again or out of order (next {expected}, start {start:?})",
                    meta.seq
                );
                expected = meta.seq + 1;
                assert!(meta.payload_len <= MAX_PAYLOAD);
                let len = FRAME_HEADER_LEN + meta.body_len();
                let copy = copy_ring(&rig.raw, meta.position, len);
                match decode_frame(&copy, meta.position, MAX_PAYLOAD) {
                    Ok(again) => assert_eq!(again, meta, "ring copy decodes differently"),
                    Err(e) => panic!("delivered frame {meta:?} fails decode_frame: {e:?}"),
                }
                assert_eq!(
                    sink.topic(),
                    &copy[FRAME_HEADER_LEN..][..usize::from(meta.topic_len)]
                );
                assert_eq!(
                    sink.payload(),
                    &copy[FRAME_HEADER_LEN + usize::from(meta.topic_len)..],
                    "sink payload differs from the ring"
                );
            }
        }
    }
    panic!("reader from {start:?} not idle after {MAX_STEPS} reads (livelock)");
}

fuzz_target!(|data: &[u8]| {
    let rig = rig();
    reset(rig);
    let mut input = Input { data, at: 0 };

    // Genuine frames.
    let frames = usize::from(input.u8() % 96);
    let mut timestamps = Vec::new();
    for i in 0..frames {
        let kind = input.u8();
        let topic_len = usize::from(input.u8() % 24) + 1;
        let payload_len = usize::from(input.u16()) % (MAX_PAYLOAD as usize + 1);
        let topic: Vec<u8> = (0..topic_len)
            .map(|j| b'a' + ((i + j) % 26) as u8)
            .collect();
        let payload: Vec<u8> = (0..payload_len).map(|j| (i * 31 + j) as u8).collect();
        let ts = 1_000 + i as u64 * 10;
        timestamps.push(ts);
        let fields = FrameHeaderFields {
            producer_id: 7,
            timestamp_ns: ts,
            flags: 0,
        };
        let claim = rig.writer.claim(topic_len, payload_len);
        rig.writer.write_topic(&claim, &topic);
        rig.writer.write_payload(&claim, &payload);
        match kind % 8 {
            0 => rig.writer.discard(claim, fields),
            // 1: claimed, never committed (a dead producer): the claim is just left behind.
            1 => {}
            _ => rig.writer.publish(claim, fields, &topic, &payload),
        }
    }

    // Raw writes: over the data region, or over the claim word.
    let mut writes = 0;
    while !input.done() && writes < 32 {
        writes += 1;
        let op = input.u8();
        match op % 4 {
            0 => {
                // Forged claim word: position and sequence straight from the input, aligned or
                // not (an unaligned one used to hang `RingReader::new`; fixed in ba35f41,
                // pinned by tests/tests/chaos_reader_unaligned_claim.rs).
                let pos = input.u64();
                let seq = input.u64();
                let mut word = [0u8; 16];
                word[..8].copy_from_slice(&pos.to_le_bytes());
                word[8..].copy_from_slice(&seq.to_le_bytes());
                pwrite_all(&rig.raw, &word, CLAIM_OFFSET as u64);
            }
            1 => {
                // A forged commit word naming its own position, at an aligned offset.
                let off = u64::from(input.u16()) & !7;
                let lap = u64::from(input.u8() % 4);
                let state = u64::from(input.u8() % 4);
                let word = (off + lap * CAPACITY) | state;
                scribble(&rig.raw, off, &word.to_le_bytes());
            }
            _ => {
                let off = u64::from(input.u16());
                let len = usize::from(input.u8());
                let bytes = input.bytes(len).to_vec();
                scribble(&rig.raw, off, &bytes);
            }
        }
    }

    let tail = rig.view.tail();
    let seq_pick = u64::from(data.first().copied().unwrap_or(0));
    drain(rig, StartAt::Earliest);
    drain(rig, StartAt::Latest);
    drain(rig, StartAt::Sequence(seq_pick.min(tail.seq)));
    drain(rig, StartAt::Sequence(tail.seq / 2));
    drain(rig, StartAt::Sequence(tail.seq.saturating_add(1)));
    let ts = timestamps.get(timestamps.len() / 2).copied().unwrap_or(0);
    drain(rig, StartAt::TimestampNs(ts));
});
