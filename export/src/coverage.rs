//! What the stream is known to hold of the ring being exported: the
//! exporter's half of resuming exactly.
//!
//! Records are normally stored in sequence order, but not always: a record
//! JetStream refused, or lost with a connection, while later ones were
//! stored, is published again after them (a late fill), and an exporter
//! killed before that leaves a hole below stored records. So the last record
//! of the prefix is not, by itself, where the export stopped. Every record
//! therefore carries a resume point `W@S` (header `Ringside-Resume`, see
//! [`crate::record`]):
//!
//! - every sequence number of the ring below `W` is accounted for by records
//!   in the stream, and
//! - every record of the ring that accounts for `W` or later is stored at a
//!   stream sequence above `S`.
//!
//! Both stay true once written (records are not removed, except by the
//! stream's retention), so the resume point of whichever record ends up last
//! is valid. A new exporter reads the records stored after `S`, subscribes
//! from `W`, and skips the ranges it found stored above `W` ("islands")
//! instead of publishing them again.
//!
//! The exporter keeps `W` as the watermark of what is stored (acknowledged, or
//! found reading back after a failure), the islands above it, and for each
//! record in flight the highest stream sequence known when it was first
//! published (every copy of it is stored after that). `S` is the least of the
//! oldest record's bound, the islands' stream sequences minus one, and the
//! highest stream sequence known.

use std::collections::BTreeMap;

/// A stored range above the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Island {
    next: u64,
    /// The lowest stream sequence of the records that make it up.
    stream_seq: u64,
}

/// The stream's coverage of one ring.
#[derive(Debug, Default)]
pub(crate) struct Coverage {
    ring: Option<u64>,
    /// Every sequence below this is stored.
    settled: u64,
    /// Stored ranges above `settled`, not touching it: first → island.
    islands: BTreeMap<u64, Island>,
    /// The highest stream sequence known to be stored (any subject).
    known_max: u64,
}

impl Coverage {
    /// Nothing known yet but the stream's last sequence.
    pub fn new(known_max: u64) -> Coverage {
        Coverage {
            known_max,
            ..Coverage::default()
        }
    }

    /// Starts `ring` at `settled`, with stored ranges `(first, next, stream_seq)`
    /// found above it.
    pub fn begin(&mut self, ring: u64, settled: u64, stored: &[(u64, u64, u64)]) {
        self.ring = Some(ring);
        self.settled = settled;
        self.islands.clear();
        for &(first, next, seq) in stored {
            self.saw_stream_seq(seq);
            self.add(first, next, seq);
        }
    }

    /// Starts over when `ring` is not the ring followed so far: its export
    /// begins at `first`, nothing of it is stored.
    pub fn follow(&mut self, ring: u64, first: u64) {
        if self.ring != Some(ring) {
            self.begin(ring, first, &[]);
        }
    }

    /// The ring followed.
    pub fn ring(&self) -> Option<u64> {
        self.ring
    }

    /// Every sequence below this is stored.
    pub fn settled(&self) -> u64 {
        self.settled
    }

    /// The highest stream sequence known to be stored.
    pub fn known_max(&self) -> u64 {
        self.known_max
    }

    /// Stored ranges above the watermark.
    #[cfg(test)]
    fn islands(&self) -> usize {
        self.islands.len()
    }

    /// Sequences stored above the watermark.
    pub fn island_frames(&self) -> u64 {
        self.islands.iter().map(|(f, i)| i.next - f).sum()
    }

    /// A stream sequence is known to be stored.
    pub fn saw_stream_seq(&mut self, seq: u64) {
        self.known_max = self.known_max.max(seq);
    }

    /// The record `[first, next)` of `ring` is stored at stream sequence `seq`.
    pub fn stored(&mut self, ring: u64, first: u64, next: u64, seq: u64) {
        self.saw_stream_seq(seq);
        if self.ring == Some(ring) {
            self.add(first, next, seq);
        }
    }

    fn add(&mut self, first: u64, next: u64, seq: u64) {
        if next <= self.settled || next <= first {
            return;
        }
        if first <= self.settled {
            self.settled = next;
        } else {
            // Merge with the islands it touches or overlaps.
            let (mut first, mut next, mut seq) = (first, next, seq);
            let touching: Vec<u64> = self
                .islands
                .range(..=next)
                .filter(|(f, i)| i.next >= first && **f <= next)
                .map(|(f, _)| *f)
                .collect();
            for f in touching {
                if let Some(i) = self.islands.remove(&f) {
                    first = first.min(f);
                    next = next.max(i.next);
                    seq = seq.min(i.stream_seq);
                }
            }
            self.islands.insert(
                first,
                Island {
                    next,
                    stream_seq: seq,
                },
            );
        }
        // Absorb the islands the watermark reached.
        while let Some((&f, &i)) = self.islands.first_key_value() {
            if f > self.settled {
                break;
            }
            self.islands.remove(&f);
            self.settled = self.settled.max(i.next);
        }
    }

    /// True when part of `[first, next)` of `ring` is already stored, so that a record
    /// covering it must be cut to [`pieces`](Self::pieces).
    pub fn overlaps(&self, ring: u64, first: u64, next: u64) -> bool {
        self.ring == Some(ring)
            && (first < self.settled
                || self
                    .islands
                    .range(..next)
                    .next_back()
                    .is_some_and(|(_, i)| i.next > first))
    }

    /// The parts of `[first, next)` not yet stored, in order (call when [`overlaps`](Self::overlaps)).
    pub fn pieces(&self, first: u64, next: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = first.max(self.settled);
        for (&f, i) in self.islands.range(..next) {
            if i.next <= at {
                continue;
            }
            if f > at {
                out.push((at, f.min(next)));
            }
            at = at.max(i.next);
            if at >= next {
                break;
            }
        }
        if at < next {
            out.push((at, next));
        }
        out
    }

    /// True when `seq` of `ring` is already stored.
    pub fn contains(&self, ring: u64, seq: u64) -> bool {
        self.overlaps(ring, seq, seq.saturating_add(1))
    }

    /// The resume point `(W, S)` to write on a record of `ring` published now, when the
    /// oldest record in flight (or this one, when none is) was first published while
    /// `oldest_bound` was the highest stream sequence known. `None` for a record of a
    /// ring this coverage does not follow.
    pub fn resume_point(&self, ring: u64, oldest_bound: Option<u64>) -> Option<(u64, u64)> {
        if self.ring != Some(ring) {
            return None;
        }
        let mut s = oldest_bound.unwrap_or(self.known_max).min(self.known_max);
        if let Some(min_island) = self.islands.values().map(|i| i.stream_seq).min() {
            s = s.min(min_island.saturating_sub(1));
        }
        Some((self.settled, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_absorbs_islands_in_order() {
        let mut c = Coverage::new(100);
        c.begin(7, 10, &[(20, 30, 105), (40, 50, 103)]);
        assert_eq!(c.settled(), 10);
        assert_eq!(c.islands(), 2);
        assert_eq!(c.resume_point(7, None), Some((10, 102)));
        assert!(c.overlaps(7, 15, 25));
        assert!(!c.overlaps(7, 10, 20));
        assert!(!c.overlaps(8, 15, 25), "another ring");
        assert_eq!(c.pieces(5, 60), vec![(10, 20), (30, 40), (50, 60)]);
        assert_eq!(c.pieces(25, 45), vec![(30, 40)]);
        assert!(c.contains(7, 45) && !c.contains(7, 35));
        // The hole [10, 20) is filled: the watermark runs to the next hole.
        c.stored(7, 10, 20, 110);
        assert_eq!(c.settled(), 30);
        assert_eq!(c.resume_point(7, Some(108)), Some((30, 102)));
        // Touching and overlapping ranges merge, keeping the lowest stream sequence.
        c.stored(7, 35, 40, 111);
        c.stored(7, 50, 55, 112);
        assert_eq!(c.islands(), 1);
        assert_eq!(c.island_frames(), 20);
        c.stored(7, 30, 35, 113);
        assert_eq!((c.settled(), c.islands()), (55, 0));
        assert_eq!(c.resume_point(7, Some(108)), Some((55, 108)));
        assert_eq!(c.resume_point(7, None), Some((55, 113)));
        // A record of another ring changes nothing but the known stream sequence.
        c.stored(8, 55, 60, 120);
        assert_eq!(c.settled(), 55);
        assert_eq!(c.known_max(), 120);
        c.follow(8, 3);
        assert_eq!((c.ring(), c.settled()), (Some(8), 3));
    }

    #[test]
    fn stored_records_below_the_watermark_change_nothing() {
        let mut c = Coverage::new(0);
        c.begin(1, 100, &[(5, 50, 3), (90, 120, 4)]);
        assert_eq!((c.settled(), c.islands()), (120, 0));
        c.stored(1, 100, 110, 9);
        assert_eq!(c.settled(), 120);
        assert_eq!(c.pieces(100, 130), vec![(120, 130)]);
    }
}
