//! Where the stream stands for one prefix: the last record stored and the
//! records stored after its resume point (to resume from at start, see
//! [`crate::coverage`]), and the records stored after a known point (to tell,
//! after a failure, which of the records in flight the stream already holds).

use crate::record;
use crate::record::RecordKind as Kind;
use crate::subject::Subjects;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::Stream;
use std::collections::HashMap;
use std::time::Duration;
use thiserror::Error;
use tokio_stream::StreamExt as _;

/// The newest record of the prefix in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRecord {
    /// Its ring.
    pub ring_id: u64,
    /// The sequence after it: where the export of that ring resumes.
    pub next: u64,
    /// Its stream sequence.
    pub stream_seq: u64,
    /// Its resume point `(W, S)` (header `Ringside-Resume`); `None` on records of
    /// exporters that did not write it.
    pub resume: Option<(u64, u64)>,
}

/// Reading the stream's state failed.
#[derive(Debug, Error)]
pub enum ResumeError {
    /// A request failed (retry later).
    #[error("{what} failed: {reason}")]
    Request {
        /// Which request.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A message under the prefix is not a ringside record.
    #[error(
        "{0}; is something other than one `ringside export` publishing under this --subject-prefix?"
    )]
    Foreign(#[from] record::RecordError),
}

fn kind_of(k: &crate::subject::SubjectKind) -> Kind {
    match k {
        crate::subject::SubjectKind::Frame(_) => Kind::Frame,
        crate::subject::SubjectKind::Loss => Kind::Loss,
        crate::subject::SubjectKind::Batch => Kind::Batch,
    }
}

/// The last record under `subjects` (JetStream "last message by subject" on `<prefix>.>`).
pub async fn last_record(
    stream: &Stream,
    subjects: &Subjects,
) -> Result<Option<LastRecord>, ResumeError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
    let msg = match stream.get_last_raw_message_by_subject(subjects.all()).await {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), K::NoMessageFound) => return Ok(None),
        Err(e) => {
            return Err(ResumeError::Request {
                what: "reading the last message of the prefix",
                reason: crate::error_chain(&e),
            });
        }
    };
    let subject = msg.subject.as_str();
    let kind = match subjects.classify(subject) {
        Some(Ok(k)) => k,
        Some(Err(e)) => {
            return Err(ResumeError::Foreign(record::RecordError {
                subject: subject.into(),
                reason: e.to_string(),
            }));
        }
        None => {
            return Err(ResumeError::Foreign(record::RecordError {
                subject: subject.into(),
                reason: "its subject has more tokens than <prefix>.<topic>".into(),
            }));
        }
    };
    let (ring_id, _, next) = record::range_from_headers(subject, &kind, Some(&msg.headers))?;
    Ok(Some(LastRecord {
        ring_id,
        next,
        stream_seq: msg.sequence,
        resume: record::resume_from_headers(Some(&msg.headers)),
    }))
}

/// Records of the prefix stored after some stream sequence.
#[derive(Debug, Default)]
pub struct StoredAfter {
    /// (kind, ring, first, next) of each, with its stream sequence.
    pub records: HashMap<(Kind, u64, u64, u64), u64>,
    /// Stream sequence of the newest one (or the start point when none).
    pub last_stream_seq: u64,
    /// True when more records were there than `cap`: the set is incomplete.
    pub truncated: bool,
}

/// Reads the headers of the records under `subjects` stored after stream
/// sequence `after` (at most `cap` of them), with an ephemeral headers-only consumer.
pub async fn stored_after(
    stream: &Stream,
    subjects: &Subjects,
    after: u64,
    cap: usize,
) -> Result<StoredAfter, ResumeError> {
    let mut out = StoredAfter {
        last_stream_seq: after,
        ..StoredAfter::default()
    };
    let last = read_after(stream, subjects, after, |kind, ring, first, next, seq| {
        if out.records.len() >= cap {
            out.truncated = true;
            return false;
        }
        out.records.insert((kind, ring, first, next), seq);
        true
    })
    .await?;
    out.last_stream_seq = last.max(after);
    Ok(out)
}

/// The records of one ring stored after a resume point's stream sequence.
#[derive(Debug, Default)]
pub struct Tail {
    /// `(first, next, stream_seq)` of each record of the ring reaching `settled` or
    /// beyond, in stream order (ranges are clipped to start at `settled` at the least).
    pub stored: Vec<(u64, u64, u64)>,
    /// Stream sequence of the newest record read.
    pub last_stream_seq: u64,
    /// True when more records were there than the cap: `stored` is incomplete.
    pub truncated: bool,
}

/// Reads the records of `ring` under `subjects` stored after stream sequence `after`
/// that account for `settled` or later (at most `cap` of them): what an exporter
/// resuming at `settled` must not publish again.
pub async fn tail_after(
    stream: &Stream,
    subjects: &Subjects,
    ring: u64,
    settled: u64,
    after: u64,
    cap: usize,
) -> Result<Tail, ResumeError> {
    let mut out = Tail::default();
    let last = read_after(stream, subjects, after, |_, r, first, next, seq| {
        if r != ring || next <= settled {
            return true;
        }
        if out.stored.len() >= cap {
            out.truncated = true;
            return false;
        }
        out.stored.push((first.max(settled), next, seq));
        true
    })
    .await?;
    out.last_stream_seq = last.max(after);
    Ok(out)
}

/// Reads the headers of the records under `subjects` stored after stream
/// sequence `after`, with an ephemeral headers-only consumer, calling `take` with
/// (kind, ring, first, next, stream sequence) of each until it returns false.
/// Returns the stream sequence of the newest message read.
async fn read_after(
    stream: &Stream,
    subjects: &Subjects,
    after: u64,
    mut take: impl FnMut(Kind, u64, u64, u64, u64) -> bool,
) -> Result<u64, ResumeError> {
    let req = |what: &'static str| {
        move |e: &dyn std::error::Error| ResumeError::Request {
            what,
            reason: crate::error_chain(e),
        }
    };
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after.saturating_add(1),
            },
            filter_subject: subjects.all().to_string(),
            headers_only: true,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|e| req("creating a consumer to read the records stored last")(&e))?;
    let mut last_stream_seq = after;
    let result = async {
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(256)
                .messages()
                .await
                .map_err(|e| req("reading the records stored last")(&e))?;
            let mut got = 0usize;
            let mut pending = 0u64;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| req("reading the records stored last")(e.as_ref()))?;
                got += 1;
                let mut seq = 0;
                if let Ok(info) = m.info() {
                    seq = info.stream_sequence;
                    last_stream_seq = last_stream_seq.max(seq);
                    pending = info.pending;
                }
                let subject = m.subject.as_str();
                let Some(Ok(kind)) = subjects.classify(subject) else {
                    continue;
                };
                if let Ok((ring, first, next)) =
                    record::range_from_headers(subject, &kind, m.headers.as_ref())
                    && !take(kind_of(&kind), ring, first, next, seq)
                {
                    return Ok(());
                }
            }
            if got == 0 || pending == 0 {
                return Ok(());
            }
        }
    }
    .await;
    let name = consumer.cached_info().name.clone();
    let _ = stream.delete_consumer(&name).await;
    result.map(|()| last_stream_seq)
}
