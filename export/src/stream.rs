//! The JetStream stream: created on request, otherwise checked against what
//! the exporter needs, with errors that say what to change.

use async_nats::jetstream::{self, stream};
use std::time::Duration;
use thiserror::Error;

use crate::subject::filter_covers;

/// Retention limits for `--create-stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateLimits {
    /// `max_bytes` (`None`: unlimited).
    pub max_bytes: Option<u64>,
    /// `max_age` (`None`: unlimited).
    pub max_age: Option<Duration>,
    /// `duplicate_window`.
    pub duplicate_window: Duration,
    /// Replicas (1 on a single server).
    pub replicas: usize,
    /// Keep the data in memory instead of files.
    pub memory: bool,
}

/// What the exporter needs from the stream.
#[derive(Debug, Clone)]
pub struct Requirements {
    /// The pattern the stream's subjects must cover (`<prefix>.>`).
    pub subjects: String,
    /// The largest message the exporter publishes.
    pub max_message_bytes: u64,
    /// The least `max_bytes` accepted (the ring's capacity unless set).
    pub min_bytes: u64,
    /// The least duplicate window accepted (twice the ack timeout).
    pub min_duplicate_window: Duration,
}

/// The stream is missing or does not fit.
#[derive(Debug, Error)]
pub enum StreamError {
    /// No JetStream behind the connection.
    #[error(
        "the NATS server does not answer JetStream requests ({reason}); start nats-server with JetStream (-js) and check that this account has JetStream enabled"
    )]
    NoJetStream {
        /// What the client said.
        reason: String,
    },
    /// The stream does not exist.
    #[error(
        "stream {stream} does not exist; pass --create-stream (with --stream-max-bytes and --stream-max-age) to create it, or create it with subjects including `{subjects}`"
    )]
    NotFound {
        /// Its name.
        stream: String,
        /// What it should capture.
        subjects: String,
    },
    /// It does not capture the prefix.
    #[error(
        "stream {stream} captures subjects [{have}], and none of them covers `{need}`: add `{need}` (or a wildcard above it) to the stream's subjects, or choose a --subject-prefix that it captures"
    )]
    Subjects {
        /// Its name.
        stream: String,
        /// Its subjects.
        have: String,
        /// The pattern needed.
        need: String,
    },
    /// Some setting makes it unusable.
    #[error("stream {stream} cannot hold this export: {problem}")]
    Unfit {
        /// Its name.
        stream: String,
        /// What is wrong and what to change.
        problem: String,
    },
    /// A request failed.
    #[error("{what} for stream {stream} failed: {reason}")]
    Request {
        /// Which request.
        what: &'static str,
        /// Its name.
        stream: String,
        /// Why.
        reason: String,
    },
}

fn bytes(n: u64) -> String {
    crate::human_bytes(n)
}

/// True when a JetStream API request found nobody to answer it (no
/// JetStream on the server, or none for this account).
fn no_responders(e: &jetstream::context::GetStreamError) -> bool {
    use std::error::Error as _;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(c) = cur {
        if let Some(r) = c.downcast_ref::<jetstream::context::RequestError>() {
            return matches!(r.kind(), jetstream::context::RequestErrorKind::NoResponders);
        }
        cur = c.source();
    }
    false
}

/// Opens the stream, creating it first when `create` is given and it does not exist.
pub async fn open(
    js: &jetstream::Context,
    name: &str,
    subjects: &str,
    create: Option<&CreateLimits>,
) -> Result<(stream::Stream, bool), StreamError> {
    match js.get_stream(name).await {
        Ok(s) => Ok((s, false)),
        Err(e) => {
            use jetstream::context::GetStreamErrorKind as K;
            let not_found = matches!(e.kind(), K::JetStream(ref je) if je.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND);
            if no_responders(&e) {
                return Err(StreamError::NoJetStream {
                    reason: crate::error_chain(&e),
                });
            }
            if !not_found {
                return Err(StreamError::Request {
                    what: "looking up",
                    stream: name.into(),
                    reason: crate::error_chain(&e),
                });
            }
            let Some(limits) = create else {
                return Err(StreamError::NotFound {
                    stream: name.into(),
                    subjects: subjects.into(),
                });
            };
            let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            let config = stream::Config {
                name: name.into(),
                subjects: vec![subjects.into()],
                max_bytes: limits.max_bytes.map_or(-1, to_i64),
                max_age: limits.max_age.unwrap_or(Duration::ZERO),
                duplicate_window: limits.duplicate_window,
                num_replicas: limits.replicas.max(1),
                storage: if limits.memory {
                    stream::StorageType::Memory
                } else {
                    stream::StorageType::File
                },
                discard: stream::DiscardPolicy::Old,
                retention: stream::RetentionPolicy::Limits,
                description: Some(
                    "ringside export: telemetry rings, one subject prefix per host".into(),
                ),
                ..Default::default()
            };
            js.create_stream(config)
                .await
                .map(|s| (s, true))
                .map_err(|e| StreamError::Request {
                    what: "creating",
                    stream: name.into(),
                    reason: crate::error_chain(&e),
                })
        }
    }
}

/// Checks an existing stream's configuration. Returns warnings to log.
pub fn check(config: &stream::Config, req: &Requirements) -> Result<Vec<String>, StreamError> {
    let name = config.name.clone();
    if !config
        .subjects
        .iter()
        .any(|f| filter_covers(f, &req.subjects))
    {
        return Err(StreamError::Subjects {
            stream: name,
            have: config.subjects.join(", "),
            need: req.subjects.clone(),
        });
    }
    let unfit = |problem: String| StreamError::Unfit {
        stream: config.name.clone(),
        problem,
    };
    if config.sealed {
        return Err(unfit("it is sealed (read-only); use another stream".into()));
    }
    if config.no_ack {
        return Err(unfit(
            "it has no_ack set, so publishes are never acknowledged and nothing can be confirmed; create it without no_ack".into(),
        ));
    }
    if config.retention != stream::RetentionPolicy::Limits {
        return Err(unfit(format!(
            "its retention is {:?}: consuming removes messages, including the last one the exporter resumes from; use retention `limits`",
            config.retention
        )));
    }
    if config.discard == stream::DiscardPolicy::New
        && (config.max_bytes > 0 || config.max_messages > 0 || config.max_messages_per_subject > 0)
    {
        return Err(unfit(
            "it refuses new messages when full (discard: new), which would stop the export; use discard: old".into(),
        ));
    }
    if config.max_message_size > 0 && (config.max_message_size as u64) < req.max_message_bytes {
        return Err(unfit(format!(
            "its max_msg_size is {} but the exporter publishes messages of up to {} (the ring's max payload, or --read-batch with --batch, plus subject and headers); raise max_msg_size or lower --read-batch",
            bytes(config.max_message_size as u64),
            bytes(req.max_message_bytes)
        )));
    }
    if config.max_bytes > 0 && (config.max_bytes as u64) < req.min_bytes {
        return Err(unfit(format!(
            "its max_bytes is {}, less than the {} required (--min-stream-bytes, by default the ring's capacity): the stream would keep less history than the ring itself; raise max_bytes (e.g. `nats stream edit {} --max-bytes ...`) or lower --min-stream-bytes",
            bytes(config.max_bytes as u64),
            bytes(req.min_bytes),
            config.name
        )));
    }
    if config.duplicate_window < req.min_duplicate_window {
        return Err(unfit(format!(
            "its duplicate_window is {}, shorter than twice --ack-timeout ({}): a publish retried after a lost ack could be stored twice; raise duplicate_window or lower --ack-timeout",
            humantime::format_duration(config.duplicate_window),
            humantime::format_duration(req.min_duplicate_window)
        )));
    }
    let mut warnings = Vec::new();
    if config.max_messages_per_subject > 0 {
        warnings.push(format!(
            "stream {} keeps at most {} messages per subject: older frames of a topic and older loss records disappear first",
            config.name, config.max_messages_per_subject
        ));
    }
    if config.max_age > Duration::ZERO && config.max_age < Duration::from_secs(3600) {
        warnings.push(format!(
            "stream {} keeps messages for {} only: an exporter stopped for longer forgets where it stopped and starts again from --from",
            config.name,
            humantime::format_duration(config.max_age)
        ));
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Requirements {
        Requirements {
            subjects: "tel.h1.>".into(),
            max_message_bytes: 70_000,
            min_bytes: 1 << 20,
            min_duplicate_window: Duration::from_secs(10),
        }
    }

    fn good() -> stream::Config {
        stream::Config {
            name: "T".into(),
            subjects: vec!["tel.>".into()],
            max_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        }
    }

    #[test]
    fn a_fitting_stream_passes() {
        assert!(check(&good(), &req()).expect("fits").is_empty());
    }

    #[test]
    fn each_misfit_is_named() {
        type Change = Box<dyn Fn(&mut stream::Config)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|c| c.subjects = vec!["other.>".into()]),
                "none of them covers `tel.h1.>`",
            ),
            (Box::new(|c| c.max_bytes = 1000), "max_bytes is"),
            (Box::new(|c| c.max_message_size = 1000), "max_msg_size"),
            (
                Box::new(|c| c.discard = stream::DiscardPolicy::New),
                "discard: new",
            ),
            (
                Box::new(|c| c.duplicate_window = Duration::from_secs(1)),
                "duplicate_window",
            ),
            (Box::new(|c| c.no_ack = true), "no_ack"),
            (
                Box::new(|c| c.retention = stream::RetentionPolicy::WorkQueue),
                "retention",
            ),
        ];
        for (change, needle) in cases {
            let mut c = good();
            change(&mut c);
            let e = check(&c, &req()).expect_err("must not fit").to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
