//! Shared code of the ring tests (`tests/tests/ring_*.rs`) and their helper binaries
//! (`ring_producer`, `ring_hostile`, `ring_host`): the self-checking payload format, child
//! process handling, and a reader tally that accounts for every ring sequence number.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use ringside_ring::{FrameMeta, Loss, LossReason, ReadStep, RingReader, VecSink};
use xxhash_rust::xxh3::xxh3_64;

/// Topic every test producer writes.
pub const TOPIC: &str = "ring.test";
/// Payload magic (xxh3 checksum, written by the Rust test producers).
pub const MAGIC: [u8; 4] = *b"RSTP";
/// Payload magic of the C chaos producer (`tests/c/chaos_producer.c`): the same layout with
/// an FNV-1a 64 checksum, which is a few lines of C.
pub const MAGIC_C: [u8; 4] = *b"RSCF";
/// Smallest test payload: fixed fields plus the trailing checksum.
pub const MIN_PAYLOAD: usize = 32;
/// Payload flag: the producer saw a sidecar connected when it sent this frame.
pub const FLAG_SIDECAR_CONNECTED: u8 = 1;
/// Payload flag: written after a hostile phase (must be delivered).
pub const FLAG_AFTER: u8 = 2;

/// A decoded, checksum-verified test payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestPayload {
    /// Index of the producer process (given on its command line).
    pub producer: u32,
    /// Per-producer sequence number: 0, 1, 2, ... over the frames it published.
    pub seq: u64,
    /// `FLAG_*` bits.
    pub flags: u8,
}

/// FNV-1a, 64 bits: the checksum of payloads with [`MAGIC_C`].
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Payload length for a producer's `seq`-th frame: varies so frames wrap at every offset.
pub fn payload_len(producer: u32, seq: u64, max_extra: usize) -> usize {
    if max_extra == 0 {
        return MIN_PAYLOAD;
    }
    MIN_PAYLOAD + ((seq.wrapping_mul(37) + u64::from(producer) * 11) as usize % (max_extra + 1))
}

/// Writes a self-checking payload into `out` (whose length is the payload length, >= 32).
pub fn encode_payload(out: &mut [u8], p: TestPayload) {
    encode_payload_with(out, p, MAGIC);
}

/// Like [`encode_payload`] with either magic: [`MAGIC`] (xxh3) or [`MAGIC_C`] (FNV-1a, what
/// the C chaos producer writes).
pub fn encode_payload_with(out: &mut [u8], p: TestPayload, magic: [u8; 4]) {
    assert!(out.len() >= MIN_PAYLOAD);
    let len = out.len();
    out[0..4].copy_from_slice(&magic);
    out[4..8].copy_from_slice(&p.producer.to_le_bytes());
    out[8..16].copy_from_slice(&p.seq.to_le_bytes());
    out[16] = p.flags;
    out[17..20].copy_from_slice(&[0xA5; 3]);
    out[20..24].copy_from_slice(&(len as u32).to_le_bytes());
    let mut x = p.seq ^ (u64::from(p.producer) << 48) ^ 0x9E37_79B9_7F4A_7C15;
    for byte in &mut out[24..len - 8] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    let check = if magic == MAGIC_C {
        fnv1a64(&out[..len - 8])
    } else {
        xxh3_64(&out[..len - 8])
    };
    out[len - 8..].copy_from_slice(&check.to_le_bytes());
}

/// Decodes and verifies a payload; `Err` says what is wrong with it.
pub fn decode_payload(bytes: &[u8]) -> Result<TestPayload, String> {
    let len = bytes.len();
    if len < MIN_PAYLOAD {
        return Err(format!(
            "payload of {len} bytes is shorter than {MIN_PAYLOAD}"
        ));
    }
    let check = u64::from_le_bytes(bytes[len - 8..].try_into().map_err(|_| "len")?);
    // The magic picks the checksum; a damaged magic fails one of the two checks (the magic
    // is inside the checked bytes).
    let (computed, kind) = if bytes[0..4] == MAGIC_C {
        (fnv1a64(&bytes[..len - 8]), "FNV-1a")
    } else {
        (xxh3_64(&bytes[..len - 8]), "xxh3")
    };
    if computed != check {
        return Err(format!("payload {kind} checksum mismatch ({len} bytes)"));
    }
    if bytes[0..4] != MAGIC && bytes[0..4] != MAGIC_C {
        return Err("bad payload magic".into());
    }
    let stated = u32::from_le_bytes(bytes[20..24].try_into().map_err(|_| "len")?) as usize;
    if stated != len {
        return Err(format!("payload states {stated} bytes but is {len}"));
    }
    Ok(TestPayload {
        producer: u32::from_le_bytes(bytes[4..8].try_into().map_err(|_| "len")?),
        seq: u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| "len")?),
        flags: bytes[16],
    })
}

/// A fresh socket path in a per-test temporary directory.
pub fn socket_path(test: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("ringside-ringtests-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    // Producers running as another uid must be able to reach the socket.
    let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    dir.join("ring.sock")
}

/// Starts an in-process ring host on a fresh socket path: a ring of `capacity` bytes, 4 KiB
/// max payload, no adoption wait.
pub fn start_host(test: &str, capacity: u64) -> (ringside_ring::RingHost, PathBuf) {
    let path = socket_path(test);
    let host = ringside_ring::RingHost::start(ringside_ring::HostOptions {
        socket_path: path.clone(),
        ring: ringside_ring::RingConfig {
            capacity,
            max_payload: 4096,
        },
        adopt_grace: Duration::ZERO,
        ..ringside_ring::HostOptions::default()
    })
    .expect("host starts");
    (host, path)
}

/// A child process whose stdout lines arrive on a channel. Killed (SIGKILL) and reaped on
/// drop, so a failing test leaves no process behind.
#[derive(Debug)]
pub struct Proc {
    /// Name for messages.
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every stdout line seen so far.
    pub seen: Vec<String>,
}

impl Proc {
    /// Starts `bin` with `args`, stdin and stdout piped, stderr inherited.
    pub fn spawn(bin: &str, args: &[String]) -> Proc {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let name = format!(
            "{}[{}]",
            Path::new(bin)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            child.id()
        );
        Proc {
            name,
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line starting with `prefix`; panics on EOF or after `timeout`.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no line starting {prefix:?} within {timeout:?}; saw {:?}",
                        self.name, self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait();
                    panic!(
                        "{}: exited ({status:?}) before printing {prefix:?}; saw {:?}",
                        self.name, self.seen
                    )
                }
            }
        }
    }

    /// Without blocking: the first line starting with `prefix` seen so far, if any.
    pub fn poll_line(&mut self, prefix: &str) -> Option<String> {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.iter().find(|l| l.starts_with(prefix)).cloned()
    }

    /// Sends a line to the child's stdin.
    pub fn send_line(&mut self, line: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    /// Closes the child's stdin (the "stop" signal of the helper binaries).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }

    /// Waits for the child to exit and checks it exited 0.
    pub fn wait_success(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    assert!(
                        status.success(),
                        "{} exited with {status}; saw {:?}",
                        self.name,
                        self.seen
                    );
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                other => panic!("{}: did not exit within {timeout:?}: {other:?}", self.name),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill9();
        }
    }
}

/// Parses `key=value` words of a status line such as `SENT sent=10 nc=0`.
pub fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// Per-producer view of what the reader delivered.
#[derive(Clone, Copy, Debug, Default)]
pub struct PerProducer {
    /// Frames delivered.
    pub delivered: u64,
    /// First per-producer sequence number delivered.
    pub first_seq: Option<u64>,
    /// Last per-producer sequence number delivered.
    pub last_seq: Option<u64>,
    /// Frames delivered with `FLAG_SIDECAR_CONNECTED` clear.
    pub written_while_disconnected: u64,
    /// Frames delivered with `FLAG_AFTER` set.
    pub after: u64,
}

/// Everything a reader saw, checked as it goes: every ring sequence number is delivered or
/// reported lost exactly once, in order; every payload verifies; per-producer sequence
/// numbers strictly increase.
#[derive(Debug, Default)]
pub struct Tally {
    /// Next ring sequence number expected.
    pub next_ring_seq: u64,
    /// Frames delivered.
    pub delivered: u64,
    /// Frames reported lost, by reason.
    pub lost: HashMap<LossReason, u64>,
    /// Every loss record.
    pub losses: Vec<Loss>,
    /// Per producer index.
    pub producers: HashMap<u32, PerProducer>,
    /// Ring producer id (pid) seen for each producer index.
    pub producer_ids: HashMap<u32, u32>,
    /// Violations found (torn or invalid frames, gaps, reordering). Must stay empty.
    pub errors: Vec<String>,
    /// Idle steps seen.
    pub idles: u64,
    /// Pending steps seen.
    pub pendings: u64,
    /// Accept sequence numbers skipped without a loss record (discarded reservations,
    /// which readers skip silently), counting them in `silent_gaps`.
    pub allow_silent_gaps: bool,
    /// Sequence numbers skipped silently (see `allow_silent_gaps`).
    pub silent_gaps: u64,
}

impl Tally {
    /// Total frames lost.
    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }

    /// Frames lost for `reason`.
    pub fn lost(&self, reason: LossReason) -> u64 {
        self.lost.get(&reason).copied().unwrap_or(0)
    }

    fn error(&mut self, text: String) {
        if self.errors.len() < 50 {
            self.errors.push(text);
        }
    }

    /// Records one read step (`sink` holds the frame if it is `Frame`).
    pub fn record(&mut self, step: &ReadStep, sink: &VecSink) {
        match step {
            ReadStep::Frame(meta) => self.frame(meta, sink),
            ReadStep::Loss(loss) => {
                if self.allow_silent_gaps && loss.first_seq > self.next_ring_seq {
                    self.silent_gaps += loss.first_seq - self.next_ring_seq;
                } else if loss.first_seq != self.next_ring_seq {
                    self.error(format!(
                        "loss {loss:?} does not start at the expected ring seq {}",
                        self.next_ring_seq
                    ));
                }
                if loss.frames == 0 {
                    self.error(format!("empty loss record {loss:?}"));
                }
                self.next_ring_seq = loss.first_seq + loss.frames;
                *self.lost.entry(loss.reason).or_default() += loss.frames;
                self.losses.push(*loss);
            }
            ReadStep::Filtered(meta) => self.error(format!("unexpected Filtered {meta:?}")),
            ReadStep::Idle => self.idles += 1,
            ReadStep::Pending => self.pendings += 1,
        }
    }

    fn frame(&mut self, meta: &FrameMeta, sink: &VecSink) {
        if self.allow_silent_gaps && meta.seq > self.next_ring_seq {
            self.silent_gaps += meta.seq - self.next_ring_seq;
        } else if meta.seq != self.next_ring_seq {
            self.error(format!(
                "frame with ring seq {} delivered, expected {} (gap or reorder not reported)",
                meta.seq, self.next_ring_seq
            ));
        }
        self.next_ring_seq = meta.seq + 1;
        self.delivered += 1;
        if sink.topic() != TOPIC.as_bytes() {
            self.error(format!(
                "ring seq {}: topic {:?}",
                meta.seq,
                String::from_utf8_lossy(sink.topic())
            ));
            return;
        }
        if sink.payload().len() != meta.payload_len as usize {
            self.error(format!(
                "ring seq {}: payload length differs from meta",
                meta.seq
            ));
        }
        let payload = match decode_payload(sink.payload()) {
            Ok(p) => p,
            Err(e) => {
                self.error(format!(
                    "ring seq {}: invalid payload delivered: {e}",
                    meta.seq
                ));
                return;
            }
        };
        match self.producer_ids.insert(payload.producer, meta.producer_id) {
            Some(id) if id != meta.producer_id => self.error(format!(
                "producer index {} seen with producer ids {id} and {}",
                payload.producer, meta.producer_id
            )),
            _ => {}
        }
        let entry = self.producers.entry(payload.producer).or_default();
        if let Some(last) = entry.last_seq
            && payload.seq <= last
        {
            let text = format!(
                "producer {}: sequence {} delivered after {last} (duplicate or reorder)",
                payload.producer, payload.seq
            );
            entry.delivered += 1;
            self.error(text);
            return;
        }
        entry.first_seq.get_or_insert(payload.seq);
        entry.last_seq = Some(payload.seq);
        entry.delivered += 1;
        if payload.flags & FLAG_SIDECAR_CONNECTED == 0 {
            entry.written_while_disconnected += 1;
        }
        if payload.flags & FLAG_AFTER != 0 {
            entry.after += 1;
        }
    }

    /// Reads until the reader reports `Idle` (sleeping briefly on `Pending`), or until
    /// `timeout`. Returns true if it reached Idle.
    pub fn drain(
        &mut self,
        reader: &mut RingReader,
        sink: &mut VecSink,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let step = reader.read(sink);
            self.record(&step, sink);
            match step {
                ReadStep::Idle => return true,
                ReadStep::Pending => {
                    if Instant::now() > deadline {
                        return false;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                _ => {}
            }
        }
    }

    /// Panics with the first violations, if any.
    pub fn assert_clean(&self) {
        assert!(
            self.errors.is_empty(),
            "reader delivered invalid data: {:#?}",
            self.errors
        );
    }
}

/// Producer index of the frame [`prime_ring`] writes.
pub const PRIME_INDEX: u32 = u32::MAX - 1;

/// Publishes one frame from this process, so that a ring holds a committed frame before the
/// test's producer processes start (tests that need a known first frame). Returns the
/// frames written (1).
pub fn prime_ring(socket: &Path) -> u64 {
    let producer = ringside_client::Producer::connect(socket).expect("prime producer connects");
    assert!(producer.wait_connected(Duration::from_secs(10)));
    let mut payload = [0u8; MIN_PAYLOAD];
    encode_payload(
        &mut payload,
        TestPayload {
            producer: PRIME_INDEX,
            seq: 0,
            flags: FLAG_SIDECAR_CONNECTED,
        },
    );
    producer.send(TOPIC, &payload).expect("prime frame");
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn both_payload_kinds_round_trip_and_detect_damage() {
        for magic in [MAGIC, MAGIC_C] {
            let p = TestPayload {
                producer: 7,
                seq: 12345,
                flags: 0,
            };
            let mut buf = vec![0u8; payload_len(7, 12345, 200)];
            encode_payload_with(&mut buf, p, magic);
            assert_eq!(decode_payload(&buf), Ok(p));
            for i in [0, 5, 20, buf.len() / 2, buf.len() - 1] {
                let mut bad = buf.clone();
                bad[i] ^= 0x10;
                assert!(decode_payload(&bad).is_err(), "damage at {i} not detected");
            }
        }
    }
}

/// A hostile producer: admitted through the real handshake, holding the raw writable
/// mapping of the ring, so it can write anything anywhere (as any admitted producer could).
#[derive(Debug)]
pub struct HostileProducer {
    /// The ring, mapped writable.
    pub ring: ringside_ring::WritableRing,
    /// The ring's memfd (for ftruncate/fallocate attempts).
    pub ring_fd: std::os::fd::OwnedFd,
    /// The open handshake connection: while it lives the sidecar counts this producer.
    _connection: std::os::fd::OwnedFd,
}

impl HostileProducer {
    /// Connects to the sidecar (or [`ringside_ring::RingHost`]) at `socket`.
    pub fn attach(socket: &Path) -> Result<HostileProducer, ringside_ring::ConnectError> {
        let admission = ringside_ring::handshake::connect(socket, None)?;
        let ring_fd = admission
            .ring
            .try_clone()
            .map_err(|e| ringside_ring::ConnectError::Protocol(format!("dup ring fd: {e}")))?;
        let welcome = admission.welcome;
        let ring = ringside_ring::WritableRing::open(
            admission.ring,
            welcome.ring_id,
            welcome.ring_config(),
        )?;
        Ok(HostileProducer {
            ring,
            ring_fd,
            _connection: admission.connection,
        })
    }
}
