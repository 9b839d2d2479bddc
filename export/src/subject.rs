//! Subjects: where each record of a ring goes in NATS, and the reversible
//! escaping of topics into one subject token.
//!
//! A frame of topic `T` goes to `<prefix>.<token(T)>`; losses go to
//! `<prefix>._loss`, whole batches (`--batch`) to `<prefix>._batch`.
//!
//! # The topic escaping (`token(T)`)
//!
//! A topic (1..=255 bytes of UTF-8) becomes exactly one subject token:
//!
//! - the bytes `A`-`Z`, `a`-`z`, `0`-`9` and `-` `_` `/` `=` `:` `+` `,` `@` `~`
//!   stay as they are, except a `_` in first position;
//! - every other byte (`.`, `*`, `>`, `%`, space and other whitespace,
//!   control bytes, other punctuation, each byte of a non-ASCII character)
//!   and a leading `_` become `%XX`, the byte in two upper-case hex digits.
//!
//! So a token never contains `.`, `*`, `>` or whitespace, is never empty, and
//! never starts with `_`: the names starting with `_` (`_loss`, `_batch`) are
//! reserved for ringside's own records and cannot collide with a topic.
//!
//! Decoding is the exact inverse and accepts only the canonical form (upper-case
//! hex, and only for bytes that must be escaped), so the mapping is a bijection
//! between topics and the tokens it produces. Examples:
//!
//! | topic | token |
//! |---|---|
//! | `load/0` | `load/0` |
//! | `cpu.user` | `cpu%2Euser` |
//! | `a b*>` | `a%20b%2A%3E` |
//! | `_loss` | `%5Floss` |
//! | `temp/°C` | `temp/%C2%B0C` |

use std::fmt::Write as _;
use thiserror::Error;

/// Reserved last token of the loss records.
pub const LOSS_TOKEN: &str = "_loss";
/// Reserved last token of whole-batch records (`--batch`).
pub const BATCH_TOKEN: &str = "_batch";

/// Longest topic a frame can carry (the ring format's limit).
pub const MAX_TOPIC_BYTES: usize = 255;
/// Longest token a topic can become (every byte escaped).
pub const MAX_TOKEN_BYTES: usize = 3 * MAX_TOPIC_BYTES;

/// True for the bytes that stay as they are (outside first position for `_`).
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'/' | b'=' | b':' | b'+' | b',' | b'@' | b'~'
        )
}

fn must_escape(b: u8, first: bool) -> bool {
    !is_plain(b) || (first && b == b'_')
}

/// Appends the token of `topic` to `out`.
pub fn escape_into(topic: &str, out: &mut String) {
    for (i, &b) in topic.as_bytes().iter().enumerate() {
        if must_escape(b, i == 0) {
            let _ = write!(out, "%{b:02X}");
        } else {
            out.push(char::from(b));
        }
    }
}

/// The subject token of `topic`.
pub fn escape(topic: &str) -> String {
    let mut s = String::with_capacity(topic.len() + 8);
    escape_into(topic, &mut s);
    s
}

/// A token that is not the escaping of any topic.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("subject token `{token}` is not an escaped ringside topic: {reason}")]
pub struct UnescapeError {
    /// The token (cut to 300 bytes).
    pub token: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The topic a token was made from (the exact inverse of [`escape`]).
pub fn unescape(token: &str) -> Result<String, UnescapeError> {
    let err = |reason| UnescapeError {
        token: token.chars().take(300).collect(),
        reason,
    };
    if token.is_empty() {
        return Err(err("it is empty"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(err("it is longer than any escaped topic (765 bytes)"));
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex_digit),
                bytes.get(i + 2).copied().and_then(hex_digit),
            ) else {
                return Err(err("`%` is not followed by two upper-case hex digits"));
            };
            let v = hi * 16 + lo;
            if !must_escape(v, out.is_empty()) {
                return Err(err(
                    "it escapes a byte that is never escaped (not canonical)",
                ));
            }
            out.push(v);
            i += 3;
        } else if must_escape(b, out.is_empty()) {
            return Err(err(if out.is_empty() && b == b'_' {
                "it starts with `_` (reserved for ringside's own records)"
            } else {
                "it holds a byte that must be escaped"
            }));
        } else {
            out.push(b);
            i += 1;
        }
    }
    if out.len() > MAX_TOPIC_BYTES {
        return Err(err("it decodes to more than 255 bytes"));
    }
    String::from_utf8(out).map_err(|_| err("it decodes to bytes that are not UTF-8"))
}

/// A `--subject-prefix` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "--subject-prefix `{prefix}` is not usable: {reason}; write dot-separated tokens without wildcards or spaces, e.g. telemetry.host1"
)]
pub struct PrefixError {
    /// What was given.
    pub prefix: String,
    /// Why not.
    pub reason: &'static str,
}

/// What a subject under the prefix holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectKind {
    /// A frame of this topic.
    Frame(String),
    /// A loss record.
    Loss,
    /// A whole batch.
    Batch,
}

/// The subjects of one exporter (one host's ring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
    loss: String,
    batch: String,
    all: String,
}

impl Subjects {
    /// Checks `prefix` and derives the subjects.
    pub fn new(prefix: &str) -> Result<Subjects, PrefixError> {
        let bad = |reason| PrefixError {
            prefix: prefix.to_string(),
            reason,
        };
        if prefix.is_empty() {
            return Err(bad("it is empty"));
        }
        if prefix.len() > 200 {
            return Err(bad("it is longer than 200 bytes"));
        }
        for token in prefix.split('.') {
            if token.is_empty() {
                return Err(bad(
                    "it has an empty token (a leading, trailing or double dot)",
                ));
            }
            if token == "*" || token == ">" || token.contains(['*', '>']) {
                return Err(bad("it contains a wildcard (`*` or `>`)"));
            }
            if token
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                return Err(bad("it contains whitespace or control characters"));
            }
        }
        Ok(Subjects {
            prefix: prefix.to_string(),
            loss: format!("{prefix}.{LOSS_TOKEN}"),
            batch: format!("{prefix}.{BATCH_TOKEN}"),
            all: format!("{prefix}.>"),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.<token(topic)>`.
    pub fn frame(&self, topic: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + 1 + topic.len() + 8);
        s.push_str(&self.prefix);
        s.push('.');
        escape_into(topic, &mut s);
        s
    }

    /// `<prefix>._loss`.
    pub fn loss(&self) -> &str {
        &self.loss
    }

    /// `<prefix>._batch`.
    pub fn batch(&self) -> &str {
        &self.batch
    }

    /// `<prefix>.>`: every record of this exporter.
    pub fn all(&self) -> &str {
        &self.all
    }

    /// What `subject` holds, or `None` when it is not one of this prefix's
    /// record subjects.
    pub fn classify(&self, subject: &str) -> Option<Result<SubjectKind, UnescapeError>> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?;
        if rest.contains('.') {
            return None;
        }
        Some(match rest {
            LOSS_TOKEN => Ok(SubjectKind::Loss),
            BATCH_TOKEN => Ok(SubjectKind::Batch),
            token => unescape(token).map(SubjectKind::Frame),
        })
    }
}

/// True when every subject matching `pattern` also matches `filter` (NATS
/// subject matching: `*` one token, `>` one or more trailing tokens).
pub fn filter_covers(filter: &str, pattern: &str) -> bool {
    let f: Vec<&str> = filter.split('.').collect();
    let p: Vec<&str> = pattern.split('.').collect();
    for (i, ft) in f.iter().enumerate() {
        if *ft == ">" {
            // `>` needs at least one token; a pattern ending in `>` has one.
            return i < p.len();
        }
        let Some(pt) = p.get(i) else {
            return false;
        };
        match (*ft, *pt) {
            ("*", ">") => return false,
            ("*", _) => {}
            (_, "*" | ">") => return false,
            (a, b) if a == b => {}
            _ => return false,
        }
    }
    f.len() == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_examples() {
        for (topic, token) in [
            ("load/0", "load/0"),
            ("cpu.user", "cpu%2Euser"),
            ("a b*>", "a%20b%2A%3E"),
            ("_loss", "%5Floss"),
            ("a_b", "a_b"),
            ("temp/°C", "temp/%C2%B0C"),
            ("100%", "100%25"),
        ] {
            assert_eq!(escape(topic), token, "{topic}");
            assert_eq!(unescape(token).as_deref(), Ok(topic), "{token}");
        }
    }

    #[test]
    fn non_canonical_tokens_are_refused() {
        for t in [
            "", "%2e", "%41", "_x", "a.b", "a b", "%", "%4", "%G0", "%FF",
        ] {
            assert!(unescape(t).is_err(), "{t:?} accepted");
        }
    }

    #[test]
    fn prefixes() {
        assert!(Subjects::new("telemetry.host1").is_ok());
        for p in ["", ".a", "a.", "a..b", "a.*", "a.>", "a b", "x>y"] {
            assert!(Subjects::new(p).is_err(), "{p:?} accepted");
        }
        let s = Subjects::new("t.h").expect("prefix");
        assert_eq!(s.frame("cpu.user"), "t.h.cpu%2Euser");
        assert_eq!(s.classify("t.h._loss"), Some(Ok(SubjectKind::Loss)));
        assert_eq!(s.classify("t.h._batch"), Some(Ok(SubjectKind::Batch)));
        assert_eq!(
            s.classify("t.h.cpu%2Euser"),
            Some(Ok(SubjectKind::Frame("cpu.user".into())))
        );
        assert_eq!(s.classify("t.h2.x"), None);
        assert_eq!(s.classify("t.h.a.b"), None);
        assert!(matches!(s.classify("t.h._other"), Some(Err(_))));
    }

    #[test]
    fn coverage() {
        let p = "telemetry.host1.>";
        for f in [
            "telemetry.host1.>",
            "telemetry.>",
            ">",
            "*.host1.>",
            "telemetry.*.>",
        ] {
            assert!(filter_covers(f, p), "{f}");
        }
        for f in [
            "telemetry.host1.*",
            "telemetry.host2.>",
            "telemetry.host1",
            "telemetry.*",
            "other.>",
            "telemetry.host1.x.>",
        ] {
            assert!(!filter_covers(f, p), "{f}");
        }
    }

    proptest! {
        #[test]
        fn any_topic_round_trips_through_one_valid_token(topic in "\\PC{1,80}") {
            prop_assume!(topic.len() <= MAX_TOPIC_BYTES);
            let token = escape(&topic);
            prop_assert!(!token.is_empty());
            prop_assert!(!token.starts_with('_'));
            prop_assert!(token.bytes().all(|b| b.is_ascii_graphic() && b != b'.' && b != b'*' && b != b'>'));
            prop_assert_eq!(unescape(&token), Ok(topic));
        }

        #[test]
        fn arbitrary_bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..255)) {
            if let Ok(topic) = String::from_utf8(bytes) {
                prop_assert_eq!(unescape(&escape(&topic)), Ok(topic));
            }
        }

        #[test]
        fn tokens_decode_to_at_most_one_topic(token in "[%A-Fa-f0-9_./*> x]{1,40}") {
            if let Ok(topic) = unescape(&token) {
                prop_assert_eq!(escape(&topic), token);
            }
        }
    }
}
