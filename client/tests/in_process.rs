//! In-process round trips over a real Unix socket and a real sealed memfd.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ringside_client::Producer;
use ringside_ring::{
    HostOptions, LossReason, ReadStep, ReaderOptions, RingConfig, RingHost, RingReader, StartAt,
    VecSink,
};

fn socket_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringside-client-{}-{name}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir.join("ringside.sock")
}

fn host(name: &str, capacity: u64) -> (RingHost, PathBuf) {
    let path = socket_path(name);
    let host = RingHost::start(HostOptions {
        socket_path: path.clone(),
        ring: RingConfig {
            capacity,
            max_payload: 4096,
        },
        adopt_grace: Duration::ZERO,
        ..HostOptions::default()
    })
    .expect("host starts");
    (host, path)
}

fn drain(reader: &mut RingReader) -> (Vec<(u64, Vec<u8>)>, u64) {
    let mut sink = VecSink::default();
    let mut frames = Vec::new();
    let mut lost = 0;
    loop {
        match reader.read(&mut sink) {
            ReadStep::Frame(meta) => frames.push((meta.seq, sink.payload().to_vec())),
            ReadStep::Loss(loss) => lost += loss.frames,
            ReadStep::Filtered(_) => {}
            ReadStep::Idle => return (frames, lost),
            ReadStep::Pending => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

#[test]
fn send_and_read_back() {
    let (host, path) = host("roundtrip", 1 << 16);
    let producer = Producer::connect(&path).expect("connects");
    assert!(producer.ring_mapped());
    for i in 0u32..100 {
        producer.send("t.a", &i.to_le_bytes()).expect("send");
    }
    let mut reservation = producer.reserve("t.b", 8).expect("reserve");
    reservation.copy_from_slice(b"zerocopy");
    reservation.commit();
    drop(producer.reserve("t.b", 8).expect("reserve"));
    producer.send("t.a", b"after-discard").expect("send");

    let mut reader =
        RingReader::new(host.ring(), StartAt::Earliest, ReaderOptions::default()).expect("reader");
    let (frames, lost) = drain(&mut reader);
    assert_eq!(lost, 0);
    assert_eq!(frames.len(), 102);
    assert_eq!(frames[100].1, b"zerocopy");
    assert_eq!(frames[101].1, b"after-discard");
    assert_eq!(frames[101].0, 102, "discarded frame consumed seq 101");
    let stats = producer.stats();
    assert_eq!(stats.sent, 102);
    assert_eq!(stats.discarded, 1);
}

/// The borrowed reservation's three endings (commit, drop, discard), with a short topic (the
/// check block built from the words taken at claim time) and a long one (hashed from the
/// ring at commit), and a caller timestamp: every committed frame passes the reader's check
/// with the bytes filled in place, and the dropped and discarded ones are skipped.
#[test]
fn borrowed_reservations_commit_drop_and_discard() {
    let (host, path) = host("borrowed", 1 << 16);
    let producer = Producer::connect(&path).expect("connects");
    let long_topic = "a.topic.longer.than.twenty.bytes";

    let mut frame = producer.reserve_borrowed("t.b", 8).expect("reserve");
    assert_eq!(frame.len(), 8);
    frame.copy_from_slice(b"borrowed");
    frame.commit();
    drop(producer.reserve_borrowed("t.b", 8).expect("reserve"));
    let mut frame = producer.reserve_borrowed(long_topic, 5).expect("reserve");
    frame.copy_from_slice(b"long!");
    frame.set_timestamp(42);
    frame.commit();
    let mut frame = producer.reserve_borrowed("t.b", 3).expect("reserve");
    frame.copy_from_slice(b"not");
    frame.discard();
    producer.send("t.a", b"after").expect("send");

    let mut reader =
        RingReader::new(host.ring(), StartAt::Earliest, ReaderOptions::default()).expect("reader");
    let mut sink = VecSink::default();
    let mut seen = Vec::new();
    loop {
        match reader.read(&mut sink) {
            ReadStep::Frame(meta) => seen.push((
                meta.seq,
                meta.timestamp_ns,
                sink.topic().to_vec(),
                sink.payload().to_vec(),
            )),
            ReadStep::Loss(loss) => panic!("loss {loss:?}"),
            ReadStep::Filtered(_) => {}
            ReadStep::Idle => break,
            ReadStep::Pending => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    let summary: Vec<_> = seen
        .iter()
        .map(|(seq, _, topic, payload)| (*seq, topic.as_slice(), payload.as_slice()))
        .collect();
    assert_eq!(
        summary,
        [
            (0, &b"t.b"[..], &b"borrowed"[..]),
            (2, long_topic.as_bytes(), &b"long!"[..]),
            (4, &b"t.a"[..], &b"after"[..]),
        ],
        "seq 1 (dropped) and 3 (discarded) are skipped"
    );
    assert_eq!(seen[1].1, 42, "the caller's timestamp");
    assert!(seen[0].1 > 0, "stamped at reserve time");
    let stats = producer.stats();
    assert_eq!(stats.sent, 3);
    assert_eq!(stats.discarded, 2);
}

#[test]
fn lapped_reader_counts_exactly() {
    let (host, path) = host("lapped", 1 << 16);
    let producer = Producer::connect(&path).expect("connects");
    let mut reader =
        RingReader::new(host.ring(), StartAt::Earliest, ReaderOptions::default()).expect("reader");
    let total = 20_000u64;
    let mut seen = 0u64;
    let mut lost = 0u64;
    let mut sink = VecSink::default();
    for i in 0..total {
        producer.send("lap", &[7u8; 100]).expect("send");
        // Read one frame every 50 writes: the reader is lapped over and over.
        if i % 50 == 0 {
            match reader.read(&mut sink) {
                ReadStep::Frame(_) => seen += 1,
                ReadStep::Loss(loss) => {
                    assert_eq!(loss.reason, LossReason::Lapped);
                    lost += loss.frames
                }
                _ => {}
            }
        }
    }
    let (rest, rest_lost) = drain(&mut reader);
    seen += rest.len() as u64;
    lost += rest_lost;
    assert!(lost > 0);
    assert_eq!(
        seen + lost,
        total,
        "seen {seen} + lost {lost} != written {total}"
    );
}

#[test]
fn too_large_and_bad_topic_are_refused() {
    let (_host, path) = host("limits", 1 << 16);
    let producer = Producer::connect(&path).expect("connects");
    let big = vec![0u8; 4097];
    assert!(matches!(
        producer.send("t", &big),
        Err(ringside_client::SendError::TooLarge {
            len: 4097,
            max: 4096
        })
    ));
    assert!(producer.send("", b"x").is_err());
    assert!(producer.send(&"x".repeat(256), b"x").is_err());
    let stats = producer.stats();
    assert_eq!(stats.dropped_too_large, 1);
    assert_eq!(stats.dropped_invalid_topic, 2);
    assert_eq!(stats.sent, 0);
}

#[test]
fn resume_from_sequence_and_time() {
    let (host, path) = host("resume", 1 << 20);
    let producer = Producer::connect(&path).expect("connects");
    for i in 0u64..1000 {
        producer
            .send_at("r", 1_000_000 + i * 10, &i.to_le_bytes())
            .expect("send");
    }
    let ring = host.ring();
    let mut reader = RingReader::new(
        Arc::clone(&ring),
        StartAt::Sequence(500),
        ReaderOptions::default(),
    )
    .expect("reader");
    let (frames, lost) = drain(&mut reader);
    assert_eq!(lost, 0);
    assert_eq!(frames.first().map(|f| f.0), Some(500));
    assert_eq!(frames.len(), 500);

    let mut reader = RingReader::new(
        Arc::clone(&ring),
        StartAt::TimestampNs(1_000_000 + 700 * 10),
        ReaderOptions::default(),
    )
    .expect("reader");
    let (frames, _) = drain(&mut reader);
    assert_eq!(frames.first().map(|f| f.0), Some(700));

    assert!(RingReader::new(ring, StartAt::Sequence(5000), ReaderOptions::default()).is_err());
}

#[test]
fn disconnected_producer_drops_and_counts() {
    let path = socket_path("nosidecar");
    let _ = std::fs::remove_file(&path);
    let producer = Producer::connect(&path).expect("no sidecar is not an error");
    assert!(!producer.ring_mapped());
    assert!(producer.send("t", b"x").is_err());
    assert_eq!(producer.stats().dropped_not_connected, 1);
}

/// A sink that keeps every committed body, like an encode buffer does.
#[derive(Default)]
struct AppendSink {
    committed: Vec<Vec<u8>>,
    open: ringside_ring::BytesMut,
}

impl ringside_ring::FrameSink for AppendSink {
    fn begin(&mut self, _meta: &ringside_ring::FrameMeta) -> Option<&mut ringside_ring::BytesMut> {
        self.open.clear();
        Some(&mut self.open)
    }
    fn commit(&mut self, _meta: &ringside_ring::FrameMeta) {
        self.committed.push(self.open.split().to_vec());
    }
    fn abort(&mut self) {
        self.open.clear();
    }
}

#[test]
fn frames_before_the_start_never_reach_the_sink() {
    let (host, path) = host("skip-sink", 1 << 20);
    let producer = Producer::connect(&path).expect("connects");
    for i in 0u64..300 {
        producer.send("s", &i.to_le_bytes()).expect("send");
    }
    let mut reader = RingReader::new(
        host.ring(),
        StartAt::Sequence(250),
        ReaderOptions::default(),
    )
    .expect("reader");
    let mut sink = AppendSink::default();
    let mut delivered = Vec::new();
    loop {
        match reader.read(&mut sink) {
            ReadStep::Frame(meta) => delivered.push(meta.seq),
            ReadStep::Idle => break,
            ReadStep::Loss(loss) => panic!("unexpected loss {loss:?}"),
            _ => {}
        }
    }
    assert_eq!(delivered.first(), Some(&250));
    assert_eq!(sink.committed.len(), delivered.len());
    assert_eq!(sink.committed.len(), 50);
}

#[test]
fn unchecked_payload_frames_round_trip() {
    let (host, path) = host("unchecked", 1 << 16);
    let producer = Producer::connect_with(
        &path,
        ringside_client::ProducerOptions {
            payload_check: false,
        },
    )
    .expect("connects");
    producer.send("u", b"raw bandwidth").expect("send");
    let mut reservation = producer.reserve("u", 4).expect("reserve");
    reservation.copy_from_slice(b"abcd");
    reservation.commit();
    let mut reader =
        RingReader::new(host.ring(), StartAt::Earliest, ReaderOptions::default()).expect("reader");
    let (frames, lost) = drain(&mut reader);
    assert_eq!(lost, 0);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].1, b"raw bandwidth");
    assert_eq!(frames[1].1, b"abcd");
}

#[test]
fn impossible_socket_paths_fail_at_once() {
    let long = std::env::temp_dir().join("x".repeat(200));
    let err = Producer::connect(&long).expect_err("a 200-byte socket path cannot work");
    assert!(err.is_permanent(), "{err}");

    // A stream socket is not a ringside (SOCK_SEQPACKET) socket.
    let dir = std::env::temp_dir().join(format!("ringside-client-{}-stream", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("stream.sock");
    let _ = std::fs::remove_file(&path);
    let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let err = Producer::connect(&path).expect_err("wrong socket type");
    assert!(err.is_permanent(), "{err}");
}

/// A connection that never sends its Hello is closed after the Hello timeout (2 s). The host
/// thread has no periodic tick: it must wake for this deadline on its own.
#[test]
fn silent_producer_connection_is_closed_after_the_hello_timeout() {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let (_host, path) = host("silent-hello", 64 * 1024);
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &UnixAddr::new(&path).expect("addr"),
    )
    .expect("connect");
    let bound = nix::sys::time::TimeVal::new(10, 0);
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &bound)
        .expect("SO_RCVTIMEO");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    // Blocks until the host closes the connection (EOF, or a refusal message then EOF).
    loop {
        match nix::unistd::read(&fd, &mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(nix::errno::Errno::EAGAIN) => {
                panic!("the host kept a silent connection open for 10 s (Hello timeout: 2 s)")
            }
            Err(_) => break,
        }
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "closed before the Hello timeout: after {waited:?}"
    );
}
