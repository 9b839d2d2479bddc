//! Topic filters of a subscription: exact names and prefixes, bounded in count
//! and length and validated before anything is allocated for them.

use thiserror::Error;

/// Most exact topic names one subscription may list.
pub const MAX_FILTER_TOPICS: usize = 64;
/// Most topic prefixes one subscription may list.
pub const MAX_FILTER_PREFIXES: usize = 64;
/// Longest topic name or prefix, in bytes: the ring's topic limit.
pub const MAX_FILTER_LEN: usize = ringside_ring::MAX_TOPIC_LEN;
/// Most bytes of names and prefixes together, so that the largest valid request fits
/// the default `--max-request` (16 KiB) with room to spare.
pub const MAX_FILTER_BYTES: usize = 8192;

/// A filter the client asked for that we refuse (answered with INVALID_ARGUMENT).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FilterError {
    /// Too many exact names.
    #[error(
        "too many topics in the filter: {count} (at most {MAX_FILTER_TOPICS}); use topic_prefixes to match many topics"
    )]
    TooManyTopics {
        /// How many were sent.
        count: usize,
    },
    /// Too many prefixes.
    #[error(
        "too many topic prefixes in the filter: {count} (at most {MAX_FILTER_PREFIXES}); use a shorter common prefix"
    )]
    TooManyPrefixes {
        /// How many were sent.
        count: usize,
    },
    /// An entry was empty.
    #[error(
        "empty {kind} at index {index} in the filter; leave both lists empty to receive all topics"
    )]
    Empty {
        /// "topic" or "topic prefix".
        kind: &'static str,
        /// Position in its list.
        index: usize,
    },
    /// Names and prefixes together are too long.
    #[error(
        "the filter holds {total} bytes of topic names and prefixes (at most {MAX_FILTER_BYTES}); use fewer names, or prefixes that cover several topics"
    )]
    TooMuchText {
        /// Bytes of all names and prefixes.
        total: usize,
    },
    /// An entry was longer than a topic can be.
    #[error(
        "{kind} at index {index} is {len} bytes long; topics are at most {MAX_FILTER_LEN} bytes"
    )]
    TooLong {
        /// "topic" or "topic prefix".
        kind: &'static str,
        /// Position in its list.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
}

/// Which topics a subscriber receives. Empty = all topics.
#[derive(Debug, Clone, Default)]
pub struct TopicFilter {
    /// Sorted, deduplicated exact names.
    topics: Vec<Box<[u8]>>,
    /// Prefixes, deduplicated.
    prefixes: Vec<Box<[u8]>>,
}

impl TopicFilter {
    /// Validates and builds a filter from the request's lists. The lists were
    /// already bounded by the request size limit; this bounds them further.
    ///
    /// # Errors
    ///
    /// [`FilterError`] for too many names or prefixes, or an empty or over-long one.
    pub fn new(topics: &[String], prefixes: &[String]) -> Result<Self, FilterError> {
        if topics.len() > MAX_FILTER_TOPICS {
            return Err(FilterError::TooManyTopics {
                count: topics.len(),
            });
        }
        if prefixes.len() > MAX_FILTER_PREFIXES {
            return Err(FilterError::TooManyPrefixes {
                count: prefixes.len(),
            });
        }
        let check = |kind: &'static str, list: &[String]| -> Result<Vec<Box<[u8]>>, FilterError> {
            let mut out = Vec::with_capacity(list.len());
            for (index, s) in list.iter().enumerate() {
                if s.is_empty() {
                    return Err(FilterError::Empty { kind, index });
                }
                if s.len() > MAX_FILTER_LEN {
                    return Err(FilterError::TooLong {
                        kind,
                        index,
                        len: s.len(),
                    });
                }
                out.push(Box::<[u8]>::from(s.as_bytes()));
            }
            out.sort_unstable();
            out.dedup();
            Ok(out)
        };
        // As sent (duplicates included): the bound is on the request.
        let total: usize = topics.iter().chain(prefixes).map(String::len).sum();
        let topics = check("topic", topics)?;
        let prefixes = check("topic prefix", prefixes)?;
        if total > MAX_FILTER_BYTES {
            return Err(FilterError::TooMuchText { total });
        }
        Ok(Self { topics, prefixes })
    }

    /// True when the filter passes every topic.
    pub fn is_all(&self) -> bool {
        self.topics.is_empty() && self.prefixes.is_empty()
    }

    /// True when `topic` is wanted.
    pub fn matches(&self, topic: &[u8]) -> bool {
        if self.is_all() {
            return true;
        }
        self.topics
            .binary_search_by(|t| t.as_ref().cmp(topic))
            .is_ok()
            || self.prefixes.iter().any(|p| topic.starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn empty_matches_all() {
        let f = TopicFilter::new(&[], &[]).expect("valid");
        assert!(f.matches(b"anything"));
    }

    #[test]
    fn exact_and_prefix() {
        let f = TopicFilter::new(&s(&["a/b", "c"]), &s(&["metrics/"])).expect("valid");
        assert!(f.matches(b"a/b"));
        assert!(f.matches(b"c"));
        assert!(!f.matches(b"a/bc"));
        assert!(f.matches(b"metrics/cpu"));
        assert!(!f.matches(b"metric"));
    }

    #[test]
    fn rejects_bad_filters() {
        let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        assert_eq!(
            TopicFilter::new(&many, &[]).expect_err("must fail"),
            FilterError::TooManyTopics { count: 65 }
        );
        assert!(matches!(
            TopicFilter::new(&[], &many).expect_err("must fail"),
            FilterError::TooManyPrefixes { .. }
        ));
        assert!(matches!(
            TopicFilter::new(&s(&[""]), &[]).expect_err("must fail"),
            FilterError::Empty { .. }
        ));
        let long = "x".repeat(256);
        let err = TopicFilter::new(&[long], &[]).expect_err("must fail");
        assert!(err.to_string().contains("256 bytes"), "{err}");
        let names: Vec<String> = (0..64).map(|i| format!("{i:0>255}")).collect();
        assert_eq!(
            TopicFilter::new(&names, &[]).expect_err("must fail"),
            FilterError::TooMuchText { total: 64 * 255 }
        );
    }
}
