//! Exhaustive interleaving test of the claim/commit protocol against the real reader.
//!
//! Producers' steps (claim, write, publish) and the reader's `read` calls are interleaved in
//! every possible order for small scenarios on a real sealed memfd ring, including producers
//! that die between claim and publish and rings small enough to be lapped. After each
//! interleaving the invariants of `docs/ring-format.md` §5.5 are checked:
//! - every delivered frame is exactly what its producer published (payload and sequence);
//! - no sequence number is delivered twice;
//! - every claimed sequence is delivered, reported lost, or still held by a dead producer.
//!
//! The granularity is one reader call; races inside a read (a lap during the copy) are
//! covered by the copy-then-recheck argument in the spec and the multi-process tests.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use ringside_ring::layout::RingHeader;
use ringside_ring::shm::create_ring_memfd;
use ringside_ring::writer::{Claim, FrameHeaderFields, WritableRing};
use ringside_ring::{ReadStep, ReaderOptions, RingConfig, RingReader, RingView, StartAt, VecSink};

const PAYLOAD: usize = 12_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Claim,
    Write,
    Publish,
}

#[derive(Clone, Debug)]
struct Actor {
    ops: Vec<Op>,
}

struct World {
    ring: WritableRing,
    claims: Vec<Option<Claim>>,
    payloads: Vec<u8>,
    published: Vec<(u64, u8)>,
    claimed: Vec<u64>,
}

fn payload_for(actor: usize) -> Vec<u8> {
    vec![b'a' + actor as u8; PAYLOAD]
}

fn new_ring() -> (Arc<RingView>, WritableRing) {
    let config = RingConfig {
        capacity: 1 << 16,
        max_payload: 16_000,
    };
    let header = RingHeader::new(&config, 7, 1);
    let fd = create_ring_memfd(&config, &header).expect("memfd ring");
    let writer_fd = fd.as_fd().try_clone_to_owned().expect("dup");
    let view = Arc::new(RingView::open(fd).expect("read-only view"));
    (
        view,
        WritableRing::open(writer_fd, 7, config).expect("writable ring"),
    )
}

fn step(world: &mut World, actor: usize, op: Op) {
    let fields = FrameHeaderFields {
        producer_id: actor as u32,
        timestamp_ns: 1,
        flags: 0,
    };
    match op {
        Op::Claim => {
            let claim = world.ring.claim(1, PAYLOAD);
            world.claimed.push(claim.seq);
            world.claims[actor] = Some(claim);
        }
        Op::Write => {
            if let Some(claim) = &world.claims[actor] {
                world.ring.write_topic(claim, b"t");
                let payload = &world.payloads[..];
                world.ring.write_payload(claim, &payload[..PAYLOAD]);
            }
        }
        Op::Publish => {
            if let Some(claim) = world.claims[actor].take() {
                let seq = claim.seq;
                let payload = payload_for(actor);
                world.ring.write_payload(&claim, &payload);
                world.ring.publish(claim, fields, b"t", &payload);
                world.published.push((seq, b'a' + actor as u8));
            }
        }
    }
}

/// Reads once, recording deliveries and losses, and checks each delivered frame.
fn read_once(
    reader: &mut RingReader,
    sink: &mut VecSink,
    world: &World,
    delivered: &mut BTreeSet<u64>,
    lost: &mut BTreeSet<u64>,
    seen: &mut Seen,
) -> ReadStep {
    let step = reader.read(sink);
    match step {
        ReadStep::Loss(loss) if loss.reason == ringside_ring::LossReason::Lapped => {
            seen.lapped += loss.frames
        }
        ReadStep::Loss(loss) if loss.reason == ringside_ring::LossReason::Abandoned => {
            seen.abandoned += loss.frames
        }
        ReadStep::Frame(_) => seen.delivered += 1,
        _ => {}
    }
    match step {
        ReadStep::Frame(meta) => {
            assert!(
                delivered.insert(meta.seq),
                "seq {} delivered twice",
                meta.seq
            );
            assert!(
                !lost.contains(&meta.seq),
                "seq {} delivered after being reported lost",
                meta.seq
            );
            let expected = world
                .published
                .iter()
                .find(|(seq, _)| *seq == meta.seq)
                .map(|(_, byte)| *byte)
                .expect("delivered a sequence that was never published");
            assert!(
                sink.payload().iter().all(|b| *b == expected),
                "payload mismatch at seq {}",
                meta.seq
            );
            assert_eq!(sink.payload().len(), PAYLOAD);
        }
        ReadStep::Loss(loss) => {
            for seq in loss.first_seq..loss.first_seq + loss.frames {
                assert!(
                    !delivered.contains(&seq),
                    "seq {seq} reported lost after delivery"
                );
                assert!(lost.insert(seq), "seq {seq} reported lost twice");
            }
        }
        _ => {}
    }
    step
}

/// All interleavings of the actors' op lists and `reads` reader calls.
fn interleavings(lens: &[usize], reads: usize) -> Vec<Vec<usize>> {
    fn rec(remaining: &mut Vec<usize>, current: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if remaining.iter().all(|r| *r == 0) {
            out.push(current.clone());
            return;
        }
        for who in 0..remaining.len() {
            if remaining[who] > 0 {
                remaining[who] -= 1;
                current.push(who);
                rec(remaining, current, out);
                current.pop();
                remaining[who] += 1;
            }
        }
    }
    let mut remaining: Vec<usize> = lens.to_vec();
    remaining.push(reads);
    let mut out = Vec::new();
    rec(&mut remaining, &mut Vec::new(), &mut out);
    out
}

/// What a scenario exercised, summed over all its interleavings.
#[derive(Debug, Default)]
struct Seen {
    schedules: usize,
    lapped: u64,
    abandoned: u64,
    delivered: u64,
}

fn run_scenario(prefill: usize, actors: &[Actor], reads: usize) -> Seen {
    let lens: Vec<usize> = actors.iter().map(|a| a.ops.len()).collect();
    let schedules = interleavings(&lens, reads);
    let reader_id = actors.len();
    let prefiller = actors.len();
    let mut seen = Seen {
        schedules: schedules.len(),
        ..Seen::default()
    };
    for schedule in &schedules {
        let (view, ring) = new_ring();
        let mut world = World {
            ring,
            claims: (0..=actors.len()).map(|_| None).collect(),
            payloads: vec![b'?'; PAYLOAD],
            published: Vec::new(),
            claimed: Vec::new(),
        };
        // The reader starts at the very beginning; prefilled frames may lap it later.
        let mut reader = RingReader::new(
            Arc::clone(&view),
            StartAt::Earliest,
            ReaderOptions {
                stall_timeout: Duration::ZERO,
            },
        )
        .expect("reader");
        for _ in 0..prefill {
            for op in [Op::Claim, Op::Write, Op::Publish] {
                step(&mut world, prefiller, op);
            }
        }
        let mut sink = VecSink::default();
        let mut delivered = BTreeSet::new();
        let mut lost = BTreeSet::new();
        let mut cursor = vec![0usize; actors.len()];
        for who in schedule {
            if *who == reader_id {
                read_once(
                    &mut reader,
                    &mut sink,
                    &world,
                    &mut delivered,
                    &mut lost,
                    &mut seen,
                );
            } else {
                let op = actors[*who].ops[cursor[*who]];
                cursor[*who] += 1;
                step(&mut world, *who, op);
            }
        }
        // Drain until idle, or until only dead claims hold the reader (Pending repeats).
        let mut pending_in_a_row = 0;
        while pending_in_a_row < 3 {
            match read_once(
                &mut reader,
                &mut sink,
                &world,
                &mut delivered,
                &mut lost,
                &mut seen,
            ) {
                ReadStep::Idle => break,
                ReadStep::Pending => pending_in_a_row += 1,
                _ => pending_in_a_row = 0,
            }
        }
        let dead: BTreeSet<u64> = world.claims.iter().flatten().map(|c| c.seq).collect();
        for seq in &world.claimed {
            assert!(
                delivered.contains(seq) || lost.contains(seq) || dead.contains(seq),
                "seq {seq} neither delivered, reported lost nor dead (schedule {schedule:?}; delivered {delivered:?}, lost {lost:?})"
            );
        }
        for (seq, _) in &world.published {
            assert!(!dead.contains(seq));
        }
    }
    seen
}

fn full(n: usize) -> Actor {
    let mut ops = Vec::new();
    for _ in 0..n {
        ops.extend([Op::Claim, Op::Write, Op::Publish]);
    }
    Actor { ops }
}

#[test]
fn two_producers_one_reader_all_interleavings() {
    let seen = run_scenario(0, &[full(1), full(1)], 3);
    assert_eq!(seen.schedules, 1680);
    assert!(seen.delivered > 0);
    // Stall timeout zero: a read that lands between another producer's claim and publish
    // skips the frame as abandoned in some schedules.
    assert!(seen.abandoned > 0, "{seen:?}");
}

#[test]
fn producer_dying_between_claim_and_commit() {
    let dying = Actor {
        ops: vec![Op::Claim, Op::Write],
    };
    let seen = run_scenario(0, &[full(1), dying, full(1)], 2);
    assert!(seen.schedules > 1000);
    assert!(seen.abandoned > 0, "{seen:?}");
}

#[test]
fn lapping_during_interleavings() {
    // Each frame is ~12 KiB in a 64 KiB ring: five frames per lap. Four prefilled frames plus
    // two producers' frames lap a reader that has not read yet, in some orders.
    let seen = run_scenario(4, &[full(1), full(1)], 3);
    assert!(seen.schedules > 1000);
    assert!(seen.lapped > 0, "no schedule lapped the reader: {seen:?}");
}
