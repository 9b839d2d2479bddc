//! ringside benchmarks.
//!
//! - [`fixture`]: a real [`ringside_ring::RingHost`] on a temporary socket with a connected
//!   [`ringside_client::Producer`], plus the `memcpy` baseline the producer is compared with.
//! - [`table`]: turns criterion's output (`target/criterion/**/new/*.json`) into the markdown
//!   table of `docs/benchmarks-producer.md`.
//!
//! The criterion benchmarks live in `benches/benches/`; the table runner is the
//! `producer_table` binary.

pub mod fixture;
pub mod table;
