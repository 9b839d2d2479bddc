//! The in-flight window: records published and not yet acknowledged, in
//! publish order, bounded in messages and in bytes. Each keeps its subject,
//! headers and payload so that it can be published again after a failure.

use crate::record::{self, header};
use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::publish::PublishAck;
use bytes::Bytes;
use ringside_proto::v1;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

/// A JetStream acknowledgement on its way.
pub(crate) type AckFuture = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

pub(crate) use crate::record::RecordKind as Kind;

/// One record to publish. Headers are built when it is published (again
/// after a failure), from these fields; its size is known without building them.
#[derive(Debug, Clone)]
pub(crate) struct OutRecord {
    pub kind: Kind,
    pub ring_id: u64,
    /// `[first, next)`.
    pub first: u64,
    pub next: u64,
    /// Frames carried (0 for a loss).
    pub frames: u64,
    /// Frame: timestamp and producer id. Loss: reason code in `reason`.
    pub timestamp_ns: u64,
    pub producer_id: u32,
    pub reason: i32,
    pub subject: async_nats::Subject,
    pub payload: Bytes,
    /// Bytes it occupies on the wire (subject, headers, payload): what the window counts.
    pub size: u64,
}

/// Decimal digits of `n`.
fn digits(n: u64) -> u64 {
    u64::from(n.checked_ilog10().unwrap_or(0) + 1)
}

/// Fixed bytes per message on the wire besides subject, headers and payload
/// (`HPUB <subject> <reply> <hdr> <total>\r\n`, the reply inbox, `\r\n`).
const WIRE_OVERHEAD: u64 = 64;

/// Encoded size of one header line (`Name: value\r\n`).
fn line(name: &str, value_len: u64) -> u64 {
    name.len() as u64 + value_len + 4
}

impl OutRecord {
    fn new(
        kind: Kind,
        ring_id: u64,
        (first, next): (u64, u64),
        subject: String,
        payload: Bytes,
    ) -> OutRecord {
        OutRecord {
            kind,
            ring_id,
            first,
            next,
            frames: 0,
            timestamp_ns: 0,
            producer_id: 0,
            reason: 0,
            subject: async_nats::Subject::from(subject),
            payload,
            size: 0,
        }
        .sized()
    }

    fn sized(mut self) -> OutRecord {
        self.size = WIRE_OVERHEAD
            + self.subject.len() as u64
            + self.header_bytes()
            + self.payload.len() as u64;
        self
    }

    /// A frame record.
    pub fn frame(ring_id: u64, subject: String, f: &v1::Frame) -> OutRecord {
        let mut r = OutRecord::new(
            Kind::Frame,
            ring_id,
            (f.seq, f.seq.saturating_add(1)),
            subject,
            f.payload.clone(),
        );
        r.frames = 1;
        r.timestamp_ns = f.timestamp_ns;
        r.producer_id = f.producer_id;
        r.sized()
    }

    /// A loss record.
    pub fn loss(ring_id: u64, subject: String, l: &v1::Loss) -> OutRecord {
        let mut r = OutRecord::new(
            Kind::Loss,
            ring_id,
            (l.first_seq, l.first_seq.saturating_add(l.frames)),
            subject,
            record::loss_payload(ring_id, l),
        );
        r.reason = l.reason;
        r.sized()
    }

    /// A batch record: `frames` (consecutive, non-empty) encoded as a `Batch`.
    pub fn batch(ring_id: u64, subject: String, frames: Vec<v1::Frame>, next: u64) -> OutRecord {
        use prost::Message as _;
        let first = frames.first().map_or(next, |f| f.seq);
        let count = frames.len() as u64;
        let batch = v1::Batch {
            ring_id,
            frames,
            losses: Vec::new(),
            resume_seq: next,
            from_seq: first,
            filtered: 0,
            discarded: 0,
            filler: Default::default(),
        };
        let mut r = OutRecord::new(
            Kind::Batch,
            ring_id,
            (first, next),
            subject,
            Bytes::from(batch.encode_to_vec()),
        );
        r.frames = count;
        r.sized()
    }

    /// Frames lost (a loss record).
    pub fn lost(&self) -> u64 {
        self.next - self.first
    }

    /// The encoded size of [`headers`](Self::headers), counting the resume point at its
    /// longest (its value is known only when the record is published).
    fn header_bytes(&self) -> u64 {
        // "NATS/1.0\r\n" ... "\r\n", the ring id, the first sequence, the resume point.
        let common = 12
            + line(header::RING, 16)
            + line(header::SEQ, digits(self.first))
            + line(header::RESUME, record::MAX_RESUME_VALUE);
        common
            + match self.kind {
                Kind::Frame => {
                    line(header::MSG_ID, 17 + digits(self.first))
                        + line(header::TIMESTAMP, digits(self.timestamp_ns))
                        + line(header::PRODUCER, digits(u64::from(self.producer_id)))
                }
                Kind::Loss => {
                    line(
                        header::MSG_ID,
                        23 + digits(self.first) + digits(self.lost()),
                    ) + line(header::FRAMES, digits(self.lost()))
                        + line(
                            header::REASON,
                            record::reason_name(self.reason).len() as u64,
                        )
                }
                Kind::Batch => {
                    line(header::MSG_ID, 24 + digits(self.first) + digits(self.next))
                        + line(header::NEXT, digits(self.next))
                        + line(header::FRAMES, digits(self.frames))
                }
            }
    }

    /// The record's headers (the wire contract in [`crate::record`]), with the
    /// resume point `(W, S)` when there is one.
    pub fn headers(&self, resume: Option<(u64, u64)>) -> HeaderMap {
        let mut h = HeaderMap::new();
        let id = match self.kind {
            Kind::Frame => record::frame_msg_id(self.ring_id, self.first),
            Kind::Loss => record::loss_msg_id(self.ring_id, self.first, self.lost()),
            Kind::Batch => record::batch_msg_id(self.ring_id, self.first, self.next),
        };
        h.insert(async_nats::header::NATS_MESSAGE_ID, id);
        h.insert(header::RING, record::ring_hex(self.ring_id));
        h.insert(header::SEQ, self.first.to_string());
        if let Some((w, s)) = resume {
            h.insert(header::RESUME, record::resume_value(w, s));
        }
        match self.kind {
            Kind::Frame => {
                h.insert(header::TIMESTAMP, self.timestamp_ns.to_string());
                h.insert(header::PRODUCER, self.producer_id.to_string());
            }
            Kind::Loss => {
                h.insert(header::FRAMES, self.lost().to_string());
                h.insert(
                    header::REASON,
                    record::reason_name(self.reason).into_owned(),
                );
            }
            Kind::Batch => {
                h.insert(header::NEXT, self.next.to_string());
                h.insert(header::FRAMES, self.frames.to_string());
            }
        }
        h
    }
}

/// A published record waiting for its acknowledgement.
pub(crate) struct Entry {
    pub rec: OutRecord,
    /// `None` after the connection it was published on was given up.
    pub ack: Option<AckFuture>,
    /// Times JetStream refused it.
    pub rejections: u32,
    /// The highest stream sequence known when it was first published: every copy
    /// of it is stored above this ([`crate::coverage`]).
    pub bound: u64,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("rec", &self.rec)
            .field("waiting", &self.ack.is_some())
            .field("rejections", &self.rejections)
            .field("bound", &self.bound)
            .finish()
    }
}

/// Records in flight, bounded in count and bytes.
#[derive(Debug)]
pub(crate) struct Window {
    entries: VecDeque<Entry>,
    bytes: u64,
    max_messages: usize,
    max_bytes: u64,
}

impl Window {
    /// An empty window (its queue allocated once, at its full size).
    pub fn new(max_messages: usize, max_bytes: u64) -> Window {
        Window {
            entries: VecDeque::with_capacity(max_messages.max(1)),
            bytes: 0,
            max_messages: max_messages.max(1),
            max_bytes,
        }
    }

    /// Whether a record of `size` bytes may be published now. An empty window
    /// always takes one record, so a record larger than the byte bound (which
    /// the start-up checks prevent) cannot wedge the exporter.
    pub fn has_room(&self, size: u64) -> bool {
        self.entries.is_empty()
            || (self.entries.len() < self.max_messages && self.bytes + size <= self.max_bytes)
    }

    /// Adds a published record.
    pub fn push(&mut self, e: Entry) {
        self.bytes += e.rec.size;
        self.entries.push_back(e);
    }

    /// Removes the oldest record.
    pub fn pop_front(&mut self) -> Option<Entry> {
        let e = self.entries.pop_front()?;
        self.bytes -= e.rec.size;
        Some(e)
    }

    /// Records in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes in flight.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The stream-sequence bound of the oldest record in flight.
    pub fn oldest_bound(&self) -> Option<u64> {
        self.entries.front().map(|e| e.bound)
    }

    /// True when the oldest record waits for an acknowledgement.
    pub fn front_waiting(&self) -> bool {
        self.entries.front().is_some_and(|e| e.ack.is_some())
    }

    /// The oldest record's acknowledgement. Acknowledgements come back in
    /// publish order on one connection, so only the front one is awaited.
    pub async fn front_ack(&mut self) -> Result<PublishAck, PublishError> {
        match self.entries.front_mut().and_then(|e| e.ack.as_mut()) {
            Some(fut) => fut.await,
            None => std::future::pending().await,
        }
    }

    /// All entries, oldest first.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.entries.iter_mut()
    }

    /// Keeps only the entries for which `keep` is true (in order).
    pub fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        let mut bytes = 0;
        self.entries.retain(|e| {
            let k = keep(e);
            if k {
                bytes += e.rec.size;
            }
            k
        });
        self.bytes = bytes;
    }

    /// Replaces the record of each entry matching `pred` with `make(entry)`,
    /// keeping the byte count right.
    pub fn replace_where(
        &mut self,
        pred: impl Fn(&Entry) -> bool,
        mut make: impl FnMut(&Entry) -> OutRecord,
    ) {
        for e in self.entries.iter_mut() {
            if pred(e) {
                let rec = make(e);
                self.bytes = self.bytes - e.rec.size + rec.size;
                e.rec = rec;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, len: usize) -> v1::Frame {
        v1::Frame {
            seq,
            timestamp_ns: 1_700_000_000_123_456_789,
            topic: "t".into(),
            producer_id: 4242,
            payload: Bytes::from(vec![0u8; len]),
        }
    }

    fn rec(seq: u64, len: usize) -> OutRecord {
        OutRecord::frame(1, format!("p.t{seq}"), &frame(seq, len))
    }

    #[test]
    fn bounded_in_messages_and_bytes() {
        let r = rec(0, 100);
        let mut w = Window::new(3, 3 * r.size);
        assert!(w.has_room(r.size));
        for s in 0..3 {
            w.push(Entry {
                rec: rec(s, 100),
                ack: None,
                rejections: 0,
                bound: s,
            });
        }
        assert_eq!(w.oldest_bound(), Some(0));
        assert!(!w.has_room(1), "message bound");
        w.pop_front();
        assert!(w.has_room(r.size));
        assert!(!w.has_room(r.size + 1), "byte bound");
        w.retain(|e| e.rec.first != 1);
        assert_eq!(w.len(), 1);
        assert_eq!(w.bytes(), r.size);
        let mut empty = Window::new(3, 10);
        assert!(empty.has_room(1 << 30), "an empty window takes one record");
        assert!(empty.pop_front().is_none());
    }

    /// The size the window counts is the size of the headers as encoded, with the
    /// resume point at its longest.
    #[test]
    fn header_bytes_match_the_headers() {
        let recs = [
            rec(7, 10),
            rec(1234567, 0),
            OutRecord::loss(
                u64::MAX,
                "p._loss".into(),
                &v1::Loss {
                    reason: 3,
                    frames: 12345,
                    first_seq: 9,
                },
            ),
            OutRecord::batch(5, "p._batch".into(), vec![frame(10, 3), frame(11, 3)], 12),
        ];
        for r in recs {
            let h = r.headers(Some((u64::MAX, u64::MAX)));
            let encoded: u64 = 12
                + h.iter()
                    .map(|(k, vs)| {
                        vs.iter()
                            .map(|v| (AsRef::<str>::as_ref(k).len() + v.as_str().len() + 4) as u64)
                            .sum::<u64>()
                    })
                    .sum::<u64>();
            assert_eq!(r.header_bytes(), encoded, "{:?}", r.kind);
        }
    }

    #[test]
    fn sizes_count_subject_headers_and_payload() {
        let r = rec(7, 1000);
        assert!(r.size > 1000 + 3 && r.size < 1000 + 400, "{}", r.size);
        let l = OutRecord::loss(
            1,
            "p._loss".into(),
            &v1::Loss {
                reason: 1,
                frames: 5,
                first_seq: 10,
            },
        );
        assert_eq!((l.first, l.next, l.frames), (10, 15, 0));
    }
}
