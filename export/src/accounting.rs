//! Accounting for sequence numbers read back from a stream, in bounded memory.
//!
//! Records normally arrive in sequence order, each starting where the
//! previous one ended. After a NATS failure they may not: a record the
//! exporter published again can land after later ones (a late fill), or be
//! stored twice when the first copy is older than JetStream's duplicate
//! window (a duplicate). The accounting keeps a watermark (everything below
//! it is accounted for) and a bounded list of holes below it, so that:
//!
//! - each sequence number is delivered at most once (duplicates are dropped
//!   and counted);
//! - a record that fills a hole is delivered when it arrives (counted as late);
//! - a hole nothing fills within `horizon` stream messages, or when the
//!   reader finishes, or when more than [`MAX_HOLES`] are open, is reported
//!   as a loss with reason `unreported`: a gap no record explained.

/// Most holes tracked at once; the oldest is reported when one more opens.
pub const MAX_HOLES: usize = 64;

/// A range of sequence numbers not accounted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hole {
    first: u64,
    next: u64,
    /// Stream sequence at which it was seen.
    opened_at: u64,
}

/// A range reported as missing: `(ring, first, frames)`.
pub type Missing = (u64, u64, u64);

/// What one record contributed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Sub-ranges `[first, next)` of the record seen for the first time, in order.
    pub fresh: Vec<(u64, u64)>,
    /// Gaps now reported as missing (possibly of an earlier ring).
    pub missing: Vec<Missing>,
}

impl Outcome {
    /// Clears both lists (keeps their capacity).
    pub fn clear(&mut self) {
        self.fresh.clear();
        self.missing.clear();
    }

    /// True when `seq` lies in a fresh range.
    pub fn is_fresh(&self, seq: u64) -> bool {
        self.fresh.iter().any(|&(a, b)| a <= seq && seq < b)
    }
}

/// The accounting of one reader.
#[derive(Debug)]
pub struct Accounting {
    ring: Option<u64>,
    next: Option<u64>,
    holes: Vec<Hole>,
    horizon: u64,
    /// Sequence numbers seen again and dropped.
    pub duplicates: u64,
    /// Sequence numbers that filled a hole.
    pub late: u64,
    /// Sequence numbers reported missing.
    pub unreported: u64,
}

impl Accounting {
    /// An empty accounting; holes older than `horizon` stream messages are reported.
    pub fn new(horizon: u64) -> Accounting {
        Accounting {
            ring: None,
            next: None,
            holes: Vec::with_capacity(MAX_HOLES + 1),
            horizon,
            duplicates: 0,
            late: 0,
            unreported: 0,
        }
    }

    /// The ring and the sequence after everything accounted for.
    pub fn position(&self) -> Option<(u64, u64)> {
        Some((self.ring?, self.next?))
    }

    fn report(&mut self, h: Hole, out: &mut Outcome) {
        if let Some(ring) = self.ring {
            self.unreported += h.next - h.first;
            out.missing.push((ring, h.first, h.next - h.first));
        }
    }

    fn open_hole(&mut self, h: Hole, out: &mut Outcome) {
        if self.holes.len() >= MAX_HOLES {
            let oldest = self.holes.remove(0);
            self.report(oldest, out);
        }
        let at = self.holes.partition_point(|x| x.first < h.first);
        self.holes.insert(at, h);
    }

    /// Accounts for a record of `ring` covering `[first, next)`, read at stream
    /// sequence `at`. `out` is cleared first.
    pub fn take(&mut self, ring: u64, first: u64, next: u64, at: u64, out: &mut Outcome) {
        out.clear();
        if next <= first {
            return;
        }
        if self.ring != Some(ring) {
            self.finish_into(out);
            self.ring = Some(ring);
            self.next = None;
        }
        let mark = *self.next.get_or_insert(first);
        // Below the watermark: fills of holes, or duplicates.
        if first < mark {
            let end = next.min(mark);
            let mut covered = 0;
            let mut i = 0;
            let mut splits = Vec::new();
            while i < self.holes.len() {
                let h = self.holes[i];
                let (a, b) = (h.first.max(first), h.next.min(end));
                if a >= b {
                    i += 1;
                    continue;
                }
                out.fresh.push((a, b));
                covered += b - a;
                if a > h.first && b < h.next {
                    self.holes[i].next = a;
                    splits.push(Hole { first: b, ..h });
                    i += 1;
                } else if a > h.first {
                    self.holes[i].next = a;
                    i += 1;
                } else if b < h.next {
                    self.holes[i].first = b;
                    i += 1;
                } else {
                    self.holes.remove(i);
                }
            }
            for s in splits {
                self.open_hole(s, out);
            }
            self.late += covered;
            self.duplicates += (end - first) - covered;
        }
        // At or above the watermark: new, maybe after a gap.
        if next > mark {
            let a = first.max(mark);
            if a > mark {
                self.open_hole(
                    Hole {
                        first: mark,
                        next: a,
                        opened_at: at,
                    },
                    out,
                );
            }
            out.fresh.push((a, next));
            self.next = Some(next);
        }
        // Holes nothing filled within the horizon.
        while let Some(h) = self.holes.first().copied() {
            if at.saturating_sub(h.opened_at) <= self.horizon {
                break;
            }
            self.holes.remove(0);
            self.report(h, out);
        }
    }

    /// Reports every open hole as missing (at the end of reading, or when
    /// the ring changes).
    pub fn finish_into(&mut self, out: &mut Outcome) {
        let holes = std::mem::take(&mut self.holes);
        for h in &holes {
            self.report(*h, out);
        }
        self.holes = holes;
        self.holes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(a: &mut Accounting, first: u64, next: u64, at: u64) -> Outcome {
        let mut o = Outcome::default();
        a.take(1, first, next, at, &mut o);
        o
    }

    #[test]
    fn in_order_records_are_all_fresh() {
        let mut a = Accounting::new(100);
        assert_eq!(take(&mut a, 10, 11, 1).fresh, vec![(10, 11)]);
        assert_eq!(take(&mut a, 11, 20, 2).fresh, vec![(11, 20)]);
        assert_eq!(a.position(), Some((1, 20)));
        assert_eq!((a.duplicates, a.late, a.unreported), (0, 0, 0));
    }

    #[test]
    fn duplicates_and_overlaps_are_dropped() {
        let mut a = Accounting::new(100);
        take(&mut a, 0, 10, 1);
        assert!(take(&mut a, 3, 4, 2).fresh.is_empty());
        assert_eq!(take(&mut a, 5, 15, 3).fresh, vec![(10, 15)]);
        assert_eq!(a.duplicates, 6);
    }

    #[test]
    fn late_fills_close_holes_and_leftovers_are_reported() {
        let mut a = Accounting::new(100);
        take(&mut a, 0, 5, 1);
        let o = take(&mut a, 8, 9, 2);
        assert_eq!(o.fresh, vec![(8, 9)]);
        assert!(o.missing.is_empty(), "not reported yet");
        assert_eq!(take(&mut a, 6, 7, 3).fresh, vec![(6, 7)]);
        assert_eq!(
            take(&mut a, 6, 7, 4).fresh,
            vec![],
            "second copy is a duplicate"
        );
        let mut end = Outcome::default();
        a.finish_into(&mut end);
        assert_eq!(end.missing, vec![(1, 5, 1), (1, 7, 1)]);
        assert_eq!((a.late, a.duplicates, a.unreported), (1, 1, 2));
    }

    #[test]
    fn holes_expire_after_the_horizon_and_on_a_ring_change() {
        let mut a = Accounting::new(10);
        take(&mut a, 0, 1, 1);
        take(&mut a, 3, 4, 2);
        let o = take(&mut a, 4, 5, 20);
        assert_eq!(o.missing, vec![(1, 1, 2)]);
        take(&mut a, 7, 8, 21);
        let mut o = Outcome::default();
        a.take(2, 0, 1, 22, &mut o);
        assert_eq!(o.missing, vec![(1, 5, 2)]);
        assert_eq!(o.fresh, vec![(0, 1)]);
        assert_eq!(a.position(), Some((2, 1)));
    }

    #[test]
    fn hole_count_is_bounded() {
        let mut a = Accounting::new(u64::MAX);
        let mut reported = 0;
        for i in 0..(MAX_HOLES as u64 + 10) {
            reported += take(&mut a, i * 2, i * 2 + 1, i).missing.len();
        }
        // The first record opens no hole: MAX_HOLES + 9 holes, 9 reported.
        assert_eq!(reported, 9);
        assert!(a.holes.len() <= MAX_HOLES);
    }

    #[test]
    fn every_sequence_is_accounted_once_under_any_arrival_order() {
        // Records 0..40 of 1 frame; deliver them shuffled with repeats; fresh
        // + missing must cover 0..40 exactly once.
        let mut order: Vec<u64> = (0..40).collect();
        order.extend([3, 7, 39, 0]);
        order.swap(5, 30);
        order.swap(10, 20);
        let mut a = Accounting::new(u64::MAX);
        let mut seen = vec![0u32; 40];
        let mut o = Outcome::default();
        for (i, s) in order.iter().enumerate() {
            a.take(1, *s, s + 1, i as u64, &mut o);
            for &(x, y) in &o.fresh {
                for q in x..y {
                    seen[q as usize] += 1;
                }
            }
        }
        a.finish_into(&mut o);
        for (_, f, n) in &o.missing {
            for q in *f..f + n {
                seen[q as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
    }
}
