//! `log` records reach the layer through `tracing`'s log bridge (`tracing_log::LogTracer`)
//! with their own target, level and source location, and without the bridge's `log.*`
//! bookkeeping fields.

mod support;

use std::time::Duration;

use ringside_proto::v1::tracing_record::{Kind, Level};
use ringside_tracing::RingsideLayer;
use support::{read_all, start_host};
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn log_records_arrive_with_their_own_metadata() {
    tracing_log::LogTracer::init().expect("install the log bridge");
    let host = start_host(4096);
    let layer = RingsideLayer::connect(&host.socket).expect("layer");
    assert!(layer.stats_handle().wait_connected(Duration::from_secs(10)));
    let line = line!() + 2;
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        log::info!(target: "legacy::io", "read {} bytes", 42);
        log::warn!("plain");
        log::trace!("fine-grained");
    });
    let frames = read_all(host.host.ring());
    let topics: Vec<&str> = frames.iter().map(|f| f.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "tracing/legacy::io",
            "tracing/log_bridge",
            "tracing/log_bridge"
        ]
    );
    let records: Vec<_> = frames.iter().map(support::Frame::record).collect();
    let info = &records[0];
    assert_eq!(info.kind, Kind::Event as i32);
    assert_eq!(info.level, Level::Info as i32);
    assert_eq!(info.target, "legacy::io");
    assert_eq!(info.message, "read 42 bytes");
    assert_eq!(info.file, file!());
    assert_eq!(info.line, line);
    assert!(info.fields.is_empty(), "no log.* fields: {:?}", info.fields);
    assert_eq!(records[1].level, Level::Warn as i32);
    assert_eq!(records[1].target, "log_bridge");
    assert_eq!(records[1].message, "plain");
    assert_eq!(records[2].level, Level::Trace as i32);
}
