//! The records in the stream: what each NATS message of an exporter holds,
//! built by the exporter and parsed back by the reader. This is the wire
//! contract that `docs/fleet.md` documents for other languages.
//!
//! Every record carries the ring it belongs to and the range of sequence
//! numbers it accounts for, `[first, next)`:
//!
//! | record | subject | headers | payload | range |
//! |---|---|---|---|---|
//! | frame | `<prefix>.<token(topic)>` | `Nats-Msg-Id: <ring>:<seq>`, `Ringside-Ring`, `Ringside-Seq`, `Ringside-Timestamp` (ns since the UNIX epoch), `Ringside-Producer` | the frame's payload, as written | `[seq, seq+1)` |
//! | loss | `<prefix>._loss` | `Nats-Msg-Id: <ring>:loss:<first>+<frames>`, `Ringside-Ring`, `Ringside-Seq` (first lost), `Ringside-Frames`, `Ringside-Reason` | JSON `{"ring_id","reason","first_seq","frames"}` | `[first, first+frames)` |
//! | batch | `<prefix>._batch` | `Nats-Msg-Id: <ring>:batch:<first>-<next>`, `Ringside-Ring`, `Ringside-Seq` (first frame), `Ringside-Next`, `Ringside-Frames` | protobuf `ringside.v1.Batch` with the frames (losses go to `_loss`) | `[first, next)` |
//!
//! `<ring>` is the ring id in 16 lower-case hex digits; sequences are decimal.
//!
//! Every record also carries `Ringside-Resume: <W>@<S>`, the exporter's own
//! bookkeeping for resuming exactly (readers ignore it): every sequence number
//! of the ring below `W` is accounted for by records in the stream, and every
//! record of the ring accounting for `W` or later is stored after stream
//! sequence `S` (see [`crate::coverage`]). Records written before this header
//! existed lack it; an exporter then resumes after the last record.

use bytes::Bytes;
use ringside_proto::v1;
use std::borrow::Cow;
use thiserror::Error;

/// Header names.
pub mod header {
    /// JetStream's deduplication id.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// The ring id, 16 lower-case hex digits.
    pub const RING: &str = "Ringside-Ring";
    /// Frame: its sequence. Loss: the first lost sequence. Batch: the first frame's.
    pub const SEQ: &str = "Ringside-Seq";
    /// Frame: the producer's timestamp, ns since the UNIX epoch.
    pub const TIMESTAMP: &str = "Ringside-Timestamp";
    /// Frame: the id the sidecar gave the producer process.
    pub const PRODUCER: &str = "Ringside-Producer";
    /// Loss: frames lost. Batch: frames carried.
    pub const FRAMES: &str = "Ringside-Frames";
    /// Loss: why (`lapped`, `abandoned`, `corrupt`, `rejected`, ...).
    pub const REASON: &str = "Ringside-Reason";
    /// Batch: the sequence after the batch (its `resume_seq`).
    pub const NEXT: &str = "Ringside-Next";
    /// Every record: `<W>@<S>`, where an exporter resumes (see the module docs).
    pub const RESUME: &str = "Ringside-Resume";
}

/// The value of [`header::RESUME`].
pub fn resume_value(settled: u64, after_stream_seq: u64) -> String {
    format!("{settled}@{after_stream_seq}")
}

/// The longest value of [`header::RESUME`] (two 20-digit numbers and `@`).
pub const MAX_RESUME_VALUE: u64 = 41;

/// The resume point `(W, S)` of a record's headers; `None` when the header is
/// missing (a record of an earlier exporter version) or malformed.
pub fn resume_from_headers(headers: Option<&async_nats::HeaderMap>) -> Option<(u64, u64)> {
    let key: async_nats::header::HeaderName = header::RESUME.parse().ok()?;
    let v = headers?.get(key)?.as_str();
    let (w, s) = v.trim().split_once('@')?;
    Some((w.parse().ok()?, s.parse().ok()?))
}

/// Loss reason code for frames NATS refused twice (exporter-side; beyond the proto's enum).
pub const REASON_REJECTED: i32 = 1001;
/// Loss reason code the reader uses for sequence numbers that no record
/// accounts for (a gap nobody reported).
pub const REASON_UNREPORTED: i32 = 1002;
/// Loss reason code for a reason name this version does not know.
pub const REASON_OTHER: i32 = 1000;
/// Reason code of `_loss` records that are *not* losses: sequence numbers whose reservation
/// a producer dropped without committing (the sidecar reports them as a batch's
/// `discarded` count; the exporter publishes their exact ranges so that a reader of the
/// stream alone accounts for every sequence number).
pub const REASON_DISCARDED: i32 = 1003;

/// The name of a loss reason code, as written in `Ringside-Reason` and printed
/// by `ringside tail`: `lapped`, `abandoned`, `corrupt`, `rejected`,
/// `unreported`; a reason the proto gains later (such as discards) gets its
/// enum name in lower case without the `LOSS_REASON_` prefix.
pub fn reason_name(code: i32) -> Cow<'static, str> {
    match code {
        REASON_REJECTED => Cow::Borrowed("rejected"),
        REASON_UNREPORTED => Cow::Borrowed("unreported"),
        REASON_DISCARDED => Cow::Borrowed("discarded"),
        REASON_OTHER => Cow::Borrowed("other"),
        c => match v1::LossReason::try_from(c) {
            Ok(v1::LossReason::Lapped) => Cow::Borrowed("lapped"),
            Ok(v1::LossReason::Abandoned) => Cow::Borrowed("abandoned"),
            Ok(v1::LossReason::Corrupt) => Cow::Borrowed("corrupt"),
            Ok(r) => {
                let n = r.as_str_name();
                Cow::Owned(
                    n.strip_prefix("LOSS_REASON_")
                        .unwrap_or(n)
                        .to_ascii_lowercase(),
                )
            }
            Err(_) => Cow::Owned(format!("reason-{c}")),
        },
    }
}

/// The code of a reason name (the inverse of [`reason_name`]; unknown names give [`REASON_OTHER`]).
pub fn reason_code(name: &str) -> i32 {
    match name {
        "rejected" => REASON_REJECTED,
        "unreported" => REASON_UNREPORTED,
        "discarded" => REASON_DISCARDED,
        n => v1::LossReason::from_str_name(&format!("LOSS_REASON_{}", n.to_ascii_uppercase()))
            .map_or(REASON_OTHER, |r| r as i32),
    }
}

/// The ring id as written in headers and message ids.
pub fn ring_hex(ring_id: u64) -> String {
    format!("{ring_id:016x}")
}

/// Message id of a frame record.
pub fn frame_msg_id(ring_id: u64, seq: u64) -> String {
    format!("{ring_id:016x}:{seq}")
}

/// Message id of a loss record.
pub fn loss_msg_id(ring_id: u64, first: u64, frames: u64) -> String {
    format!("{ring_id:016x}:loss:{first}+{frames}")
}

/// Message id of a batch record.
pub fn batch_msg_id(ring_id: u64, first: u64, next: u64) -> String {
    format!("{ring_id:016x}:batch:{first}-{next}")
}

/// The JSON payload of a loss record.
pub fn loss_payload(ring_id: u64, loss: &v1::Loss) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "ring_id": ring_hex(ring_id),
            "reason": reason_name(loss.reason),
            "first_seq": loss.first_seq,
            "frames": loss.frames,
        })
        .to_string(),
    )
}

/// The three kinds of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// One frame.
    Frame,
    /// A run of lost frames.
    Loss,
    /// Frames in one message.
    Batch,
}

/// One record read back from the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// One frame.
    Frame {
        /// Ring id.
        ring_id: u64,
        /// The frame (topic decoded from the subject).
        frame: v1::Frame,
    },
    /// A run of lost frames.
    Loss {
        /// Ring id.
        ring_id: u64,
        /// The loss.
        loss: v1::Loss,
    },
    /// Consecutive frames in one message.
    Batch {
        /// Ring id.
        ring_id: u64,
        /// First sequence the batch accounts for.
        first: u64,
        /// The batch (frames and `resume_seq`).
        batch: v1::Batch,
    },
}

impl Record {
    /// The ring the record's sequences belong to.
    pub fn ring_id(&self) -> u64 {
        match self {
            Record::Frame { ring_id, .. }
            | Record::Loss { ring_id, .. }
            | Record::Batch { ring_id, .. } => *ring_id,
        }
    }

    /// `[first, next)`: the sequences the record accounts for.
    pub fn range(&self) -> (u64, u64) {
        match self {
            Record::Frame { frame, .. } => (frame.seq, frame.seq.saturating_add(1)),
            Record::Loss { loss, .. } => {
                (loss.first_seq, loss.first_seq.saturating_add(loss.frames))
            }
            Record::Batch { first, batch, .. } => (*first, batch.resume_seq),
        }
    }
}

/// A message under the prefix that is not a well-formed record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("message on {subject} is not a ringside record: {reason}")]
pub struct RecordError {
    /// Its subject.
    pub subject: String,
    /// What is wrong.
    pub reason: String,
}

/// The ring and the range `[first, next)` a record accounts for, from its
/// headers alone (headers-only consumers and "last message" lookups).
pub fn range_from_headers(
    subject: &str,
    kind: &crate::subject::SubjectKind,
    headers: Option<&async_nats::HeaderMap>,
) -> Result<(u64, u64, u64), RecordError> {
    use crate::subject::SubjectKind;
    let h = Fields { subject, headers };
    let ring = h.ring()?;
    let first = h.num(header::SEQ)?;
    let next = match kind {
        SubjectKind::Frame(_) => first.saturating_add(1),
        SubjectKind::Loss => first.saturating_add(h.num(header::FRAMES)?),
        SubjectKind::Batch => h.num(header::NEXT)?,
    };
    if next <= first {
        return Err(h.bad(format!("it accounts for no sequence ([{first}, {next}))")));
    }
    Ok((ring, first, next))
}

struct Fields<'a> {
    subject: &'a str,
    headers: Option<&'a async_nats::HeaderMap>,
}

impl Fields<'_> {
    fn bad(&self, reason: String) -> RecordError {
        RecordError {
            subject: self.subject.to_string(),
            reason,
        }
    }

    fn get(&self, name: &str) -> Result<&str, RecordError> {
        // Parsing maps well-known names (`Nats-Msg-Id`) to the client's
        // standard header keys, which a plain `&str` lookup would miss.
        let key: async_nats::header::HeaderName = name
            .parse()
            .map_err(|_| self.bad(format!("bad header name {name}")))?;
        self.headers
            .and_then(|h| h.get(key))
            .map(|v| v.as_str())
            .ok_or_else(|| self.bad(format!("header {name} is missing")))
    }

    fn num(&self, name: &str) -> Result<u64, RecordError> {
        let v = self.get(name)?;
        v.trim()
            .parse()
            .map_err(|_| self.bad(format!("header {name} `{v}` is not a number")))
    }

    fn ring(&self) -> Result<u64, RecordError> {
        let t = self.get(header::RING)?;
        u64::from_str_radix(t.trim(), 16).map_err(|_| {
            self.bad(format!(
                "header {} `{t}` is not a hex ring id",
                header::RING
            ))
        })
    }
}

/// Parses one message of the prefix. `kind` comes from
/// [`Subjects::classify`](crate::subject::Subjects::classify).
pub fn parse(
    subject: &str,
    kind: crate::subject::SubjectKind,
    headers: Option<&async_nats::HeaderMap>,
    payload: Bytes,
) -> Result<Record, RecordError> {
    use crate::subject::SubjectKind;
    let h = Fields { subject, headers };
    let bad = |reason: String| h.bad(reason);
    let num = |name: &str| h.num(name);
    let get = |name: &str| h.get(name);
    let ring_id = h.ring()?;
    match kind {
        SubjectKind::Frame(topic) => {
            let producer = num(header::PRODUCER)?;
            Ok(Record::Frame {
                ring_id,
                frame: v1::Frame {
                    seq: num(header::SEQ)?,
                    timestamp_ns: num(header::TIMESTAMP)?,
                    topic,
                    producer_id: u32::try_from(producer)
                        .map_err(|_| bad(format!("producer id {producer} is out of range")))?,
                    payload,
                },
            })
        }
        SubjectKind::Loss => {
            let reason = get(header::REASON)?;
            let frames = num(header::FRAMES)?;
            if frames == 0 {
                return Err(bad("a loss of 0 frames".into()));
            }
            Ok(Record::Loss {
                ring_id,
                loss: v1::Loss {
                    reason: reason_code(reason.trim()),
                    frames,
                    first_seq: num(header::SEQ)?,
                },
            })
        }
        SubjectKind::Batch => {
            use prost::Message as _;
            let mut batch = v1::Batch::decode(payload)
                .map_err(|e| bad(format!("the payload is not a ringside.v1.Batch: {e}")))?;
            let first = num(header::SEQ)?;
            let next = num(header::NEXT)?;
            if next < first {
                return Err(bad(format!(
                    "{} {next} is below {} {first}",
                    header::NEXT,
                    header::SEQ
                )));
            }
            if batch.frames.iter().any(|f| f.seq < first || f.seq >= next) {
                return Err(bad(format!("a frame lies outside [{first}, {next})")));
            }
            batch.ring_id = ring_id;
            batch.resume_seq = next;
            Ok(Record::Batch {
                ring_id,
                first,
                batch,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_round_trip() {
        for code in [
            v1::LossReason::Lapped as i32,
            v1::LossReason::Abandoned as i32,
            v1::LossReason::Corrupt as i32,
            REASON_REJECTED,
            REASON_UNREPORTED,
            REASON_DISCARDED,
        ] {
            assert_eq!(reason_code(&reason_name(code)), code);
        }
        assert_eq!(reason_name(1), "lapped");
        assert_eq!(reason_code("no-such"), REASON_OTHER);
        assert_eq!(reason_name(77), "reason-77");
    }

    #[test]
    fn resume_header_round_trips() {
        let mut h = async_nats::HeaderMap::new();
        assert_eq!(resume_from_headers(Some(&h)), None);
        h.insert(header::RESUME, resume_value(u64::MAX, u64::MAX));
        assert_eq!(
            resume_value(u64::MAX, u64::MAX).len() as u64,
            MAX_RESUME_VALUE
        );
        assert_eq!(resume_from_headers(Some(&h)), Some((u64::MAX, u64::MAX)));
        h.insert(header::RESUME, "12@x");
        assert_eq!(resume_from_headers(Some(&h)), None);
    }

    #[test]
    fn ids() {
        assert_eq!(frame_msg_id(0xab, 7), "00000000000000ab:7");
        assert_eq!(loss_msg_id(1, 5, 3), "0000000000000001:loss:5+3");
        assert_eq!(batch_msg_id(1, 5, 9), "0000000000000001:batch:5-9");
    }
}
