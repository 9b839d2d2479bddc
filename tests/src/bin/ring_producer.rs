//! Test producer process: connects to a ringside socket and writes self-checking frames
//! (producer index, per-producer sequence number, checksum; see `ring_support`).
//!
//! Options (all `--key value`):
//! - `--socket PATH` (required), `--index N` (producer index written into payloads)
//! - `--count N`: frames to publish; 0 = until stdin reaches EOF (default 0)
//! - `--max-extra N`: payload length varies from 32 to 32+N bytes (default 200)
//! - `--throttle-every K --throttle-us U`: sleep U µs after every K frames
//! - `--park-after K`: publish K frames, then park the next send between claim and commit
//!   (prints `PARKED` and hangs until killed)
//! - `--setuid UID`: drop to UID (and gid UID) before connecting
//! - `--connect-only 1`: print the handshake result and exit
//! - `--flags F`: extra payload flag bits
//! - `--threads N`: N writer threads share the one `Producer`; thread t writes producer
//!   index `index + t`, `count` frames each
//! - `--reserve-every K`: every K-th frame goes through `reserve` + in-place fill + `commit`
//! - `--discard-every K`: every K-th attempt reserves a frame and drops it (discarded)
//! - `--unchecked 1`: `ProducerOptions { payload_check: false }` (payload not in the frame check)
//! - `--reserve-hang 1` (with `--park-after K`): after K frames, hold a reservation forever
//!
//! Prints `CONNECTED pid=.. ring=..`, or `REFUSED reason=.. detail=..`, and at the end
//! `SENT sent=.. published=.. nc=.. reconnects=.. disconnected=..`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringside_client::{Producer, ProducerOptions};
use ringside_ring::ConnectError;
use ringside_tests::ring_support::{
    FLAG_SIDECAR_CONNECTED, TOPIC, TestPayload, encode_payload, payload_len,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts: HashMap<String, String> = args
        .chunks(2)
        .filter_map(|pair| match pair {
            [k, v] => Some((k.trim_start_matches("--").to_owned(), v.clone())),
            _ => None,
        })
        .collect();
    let num = |key: &str, default: u64| -> u64 {
        opts.get(key)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("--{key} {v}: not a number"))
            })
            .unwrap_or(default)
    };
    let socket = opts.get("socket").expect("--socket PATH").clone();
    let index = num("index", 0) as u32;
    let count = num("count", 0);
    let max_extra = num("max-extra", 200) as usize;
    let throttle_every = num("throttle-every", 0);
    let throttle_us = num("throttle-us", 0);
    let park_after = opts.get("park-after").map(|_| num("park-after", 0));
    let extra_flags = num("flags", 0) as u8;
    let mut out = std::io::stdout();

    if let Some(uid) = opts.get("setuid") {
        let uid: u32 = uid.parse().expect("--setuid UID");
        nix::unistd::setgroups(&[]).expect("setgroups");
        nix::unistd::setgid(nix::unistd::Gid::from_raw(uid)).expect("setgid");
        nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).expect("setuid");
    }

    let options = ProducerOptions {
        payload_check: !opts.contains_key("unchecked"),
    };
    let producer = match Producer::connect_with(&socket, options) {
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
    if opts.contains_key("connect-only") {
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
        count,
        max_extra,
        throttle_every,
        throttle_us,
        park_after,
        extra_flags,
        reserve_every: num("reserve-every", 0),
        discard_every: num("discard-every", 0),
        reserve_hang: opts.contains_key("reserve-hang"),
    };
    let threads = num("threads", 1).max(1) as u32;
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
            if self.discard_every > 0 && attempts % self.discard_every == 0 {
                // A reservation dropped without commit: published as discarded.
                let mut reservation = producer.reserve(TOPIC, len).expect("reserve");
                reservation.fill(0xDD);
                drop(reservation);
                continue;
            }
            let result = if self.reserve_every > 0 && attempts % self.reserve_every == 0 {
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
            if self.throttle_every > 0 && seq % self.throttle_every == 0 {
                std::thread::sleep(Duration::from_micros(self.throttle_us));
            }
        }
        (seq, disconnected)
    }
}
