//! Test producer process: connects to a ringside socket and writes self-checking frames
//! (producer index, per-producer sequence number, checksum; see `ring_support`).
//!
//! Options: see `ring_producer --help` (the `Args` struct below).
//!
//! Prints `CONNECTED pid=.. ring=..`, or `REFUSED reason=.. detail=..`, and at the end
//! `SENT sent=.. published=.. nc=.. reconnects=.. disconnected=..`.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use clap::builder::{ArgAction, BoolishValueParser};
use ringside_client::{Producer, ProducerOptions};
use ringside_ring::ConnectError;
use ringside_tests::ring_support::{
    FLAG_SIDECAR_CONNECTED, TOPIC, TestPayload, encode_payload, payload_len,
};
use std::path::PathBuf;

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// Socket of the sidecar (or `ring_host`).
    #[arg(long)]
    socket: PathBuf,
    /// Producer index written into payloads.
    #[arg(long, default_value_t = 0)]
    index: u32,
    /// Frames to publish; 0 = until stdin reaches EOF.
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Payload length varies from 32 to 32+N bytes.
    #[arg(long, default_value_t = 200)]
    max_extra: usize,
    /// With `--throttle-us U`: sleep U µs after every K frames.
    #[arg(long, default_value_t = 0)]
    throttle_every: u64,
    /// See `--throttle-every`.
    #[arg(long, default_value_t = 0)]
    throttle_us: u64,
    /// Publish K frames, then claim the next one and never commit it (prints `PARKED` and
    /// hangs until killed).
    #[arg(long)]
    park_after: Option<u64>,
    /// Drop to this uid (and gid) before connecting.
    #[arg(long)]
    setuid: Option<u32>,
    /// Print the handshake result and exit.
    #[arg(long, action = ArgAction::Set, value_parser = BoolishValueParser::new(), default_value = "false")]
    connect_only: bool,
    /// Extra payload flag bits.
    #[arg(long, default_value_t = 0)]
    flags: u8,
    /// N writer threads share the one `Producer`; thread t writes producer index
    /// `index + t`, `count` frames each.
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Every K-th frame goes through `reserve` + in-place fill + `commit`.
    #[arg(long, default_value_t = 0)]
    reserve_every: u64,
    /// Every K-th attempt reserves a frame and drops it (discarded).
    #[arg(long, default_value_t = 0)]
    discard_every: u64,
    /// `ProducerOptions { payload_check: false }` (payload not in the frame check).
    #[arg(long, action = ArgAction::Set, value_parser = BoolishValueParser::new(), default_value = "false")]
    unchecked: bool,
    /// With `--park-after K`: after K frames, hold a half-filled reservation forever.
    #[arg(long, action = ArgAction::Set, value_parser = BoolishValueParser::new(), default_value = "false")]
    reserve_hang: bool,
}

fn main() {
    let args = Args::parse();
    let index = args.index;
    let mut out = std::io::stdout();

    if let Some(uid) = args.setuid {
        nix::unistd::setgroups(&[]).expect("setgroups");
        nix::unistd::setgid(nix::unistd::Gid::from_raw(uid)).expect("setgid");
        nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).expect("setuid");
    }

    let options = ProducerOptions {
        payload_check: !args.unchecked,
    };
    let producer = match Producer::connect_with(&args.socket, options) {
        Ok(p) => p,
        Err(ConnectError::Refused { reason, detail }) => {
            let _ = writeln!(
                out,
                "REFUSED reason={reason:?} uid={} detail={detail}",
                nix::unistd::getuid()
            );
            return;
        }
        Err(e) => {
            let _ = writeln!(out, "ERROR {e}");
            std::process::exit(1);
        }
    };
    if !producer.wait_connected(Duration::from_secs(10)) {
        let _ = writeln!(out, "NOTCONNECTED {:?}", producer.last_error());
        std::process::exit(2);
    }
    let _ = writeln!(
        out,
        "CONNECTED pid={} ring={}",
        std::process::id(),
        producer.ring_id().unwrap_or(0)
    );
    let _ = out.flush();
    if args.connect_only {
        return;
    }

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sink = [0u8; 256];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut sink) {
                if n == 0 {
                    break;
                }
            }
            stop.store(true, Ordering::SeqCst);
        });
    }

    let config = Writer {
        count: args.count,
        max_extra: args.max_extra,
        throttle_every: args.throttle_every,
        throttle_us: args.throttle_us,
        park_after: args.park_after,
        extra_flags: args.flags,
        reserve_every: args.reserve_every,
        discard_every: args.discard_every,
        reserve_hang: args.reserve_hang,
    };
    let threads = args.threads.max(1);
    let (published, disconnected) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (producer, stop, config) = (&producer, &stop, &config);
                scope.spawn(move || config.run(producer, index + t, stop))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .fold((0, 0), |(p, d), (p2, d2)| (p + p2, d + d2))
    });
    let stats = producer.stats();
    let _ = writeln!(
        out,
        "SENT sent={} published={published} nc={} reconnects={} disconnected={disconnected} discarded={}",
        stats.sent, stats.dropped_not_connected, stats.reconnects, stats.discarded
    );
    let _ = out.flush();
}

/// What each writer thread does.
struct Writer {
    count: u64,
    max_extra: usize,
    throttle_every: u64,
    throttle_us: u64,
    park_after: Option<u64>,
    extra_flags: u8,
    reserve_every: u64,
    discard_every: u64,
    reserve_hang: bool,
}

impl Writer {
    /// Publishes frames for producer index `index`; returns (published, written while no
    /// sidecar was connected).
    fn run(&self, producer: &Producer, index: u32, stop: &AtomicBool) -> (u64, u64) {
        let mut buf = vec![0u8; ringside_tests::ring_support::MIN_PAYLOAD + self.max_extra];
        let mut seq = 0u64;
        let mut disconnected = 0u64;
        let mut attempts = 0u64;
        while (self.count == 0 || seq < self.count) && !stop.load(Ordering::Relaxed) {
            attempts += 1;
            let connected = producer.sidecar_connected();
            let len = payload_len(index, seq, self.max_extra);
            let flags = self.extra_flags | if connected { FLAG_SIDECAR_CONNECTED } else { 0 };
            let frame = TestPayload {
                producer: index,
                seq,
                flags,
            };
            if self.park_after == Some(seq) {
                // A frame claimed and never committed, as a producer killed between claim
                // and commit leaves it: with --reserve-hang half filled, otherwise fully
                // written (what `send` has done just before its commit).
                let mut reservation = producer.reserve(TOPIC, len).expect("reserve");
                if self.reserve_hang {
                    reservation[..len / 2].fill(0xEE);
                } else {
                    encode_payload(&mut reservation, frame);
                }
                println!("PARKED");
                let _ = std::io::stdout().flush();
                loop {
                    std::thread::park();
                }
            }
            if self.discard_every > 0 && attempts.is_multiple_of(self.discard_every) {
                // A reservation dropped without commit: published as discarded.
                let mut reservation = producer.reserve(TOPIC, len).expect("reserve");
                reservation.fill(0xDD);
                drop(reservation);
                continue;
            }
            let result = if self.reserve_every > 0 && attempts.is_multiple_of(self.reserve_every) {
                producer.reserve(TOPIC, len).map(|mut reservation| {
                    encode_payload(&mut reservation, frame);
                    reservation.commit();
                })
            } else {
                let payload = &mut buf[..len];
                encode_payload(payload, frame);
                producer.send(TOPIC, payload)
            };
            match result {
                Ok(()) => {
                    seq += 1;
                    if !connected {
                        disconnected += 1;
                    }
                }
                Err(e) => {
                    println!("ERROR send: {e}");
                    std::process::exit(1);
                }
            }
            if self.throttle_every > 0 && seq.is_multiple_of(self.throttle_every) {
                std::thread::sleep(Duration::from_micros(self.throttle_us));
            }
        }
        (seq, disconnected)
    }
}
