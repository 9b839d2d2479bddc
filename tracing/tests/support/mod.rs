//! Shared by the layer's tests: an in-process ring host (a real Unix socket and sealed
//! memfd ring, as the sidecar makes them) and a reader that decodes every record in it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use ringside_proto::v1::TracingRecord;
use ringside_ring::{
    HostOptions, ReadStep, ReaderOptions, RingConfig, RingHost, RingReader, RingView, StartAt,
    VecSink,
};

/// A ring host on a socket in its own temp dir.
pub struct Host {
    pub host: RingHost,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts a host with a 4 MiB ring and `max_payload`.
pub fn start_host(max_payload: u32) -> Host {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("ringside.sock");
    let host = RingHost::start(HostOptions {
        socket_path: socket.clone(),
        ring: RingConfig {
            capacity: 4 << 20,
            max_payload,
        },
        adopt_grace: Duration::ZERO,
        ..HostOptions::default()
    })
    .expect("ring host");
    Host {
        host,
        socket,
        _dir: dir,
    }
}

/// One frame: topic, producer id, payload.
pub struct Frame {
    pub topic: String,
    pub producer_id: u32,
    pub timestamp_ns: u64,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The payload decoded as a `TracingRecord`.
    pub fn record(&self) -> TracingRecord {
        TracingRecord::decode(&self.payload[..])
            .unwrap_or_else(|e| panic!("frame on {} does not decode: {e}", self.topic))
    }
}

/// Every frame in the ring, from the start, until the reader is idle. Panics on a loss.
pub fn read_all(view: Arc<RingView>) -> Vec<Frame> {
    let mut reader = RingReader::new(view, StartAt::Earliest, ReaderOptions::default())
        .expect("reader at earliest");
    let mut sink = VecSink::default();
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "reader did not become idle");
        match reader.read(&mut sink) {
            ReadStep::Frame(meta) => frames.push(Frame {
                topic: String::from_utf8(sink.topic().to_vec()).expect("topic is UTF-8"),
                producer_id: meta.producer_id,
                timestamp_ns: meta.timestamp_ns,
                payload: sink.payload().to_vec(),
            }),
            ReadStep::Filtered(meta) => panic!("no filter is set, yet {meta:?} was filtered"),
            ReadStep::Loss(loss) => panic!("reader reported a loss: {loss:?}"),
            ReadStep::Pending => std::thread::sleep(Duration::from_millis(1)),
            ReadStep::Idle => return frames,
        }
    }
}
