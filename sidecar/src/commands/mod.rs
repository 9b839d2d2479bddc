//! The subcommands.

pub mod client;
pub mod demo;
pub mod export;
pub mod load;
pub mod serve;
pub mod stats;
pub mod tail;
