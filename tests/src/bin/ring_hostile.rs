//! A hostile producer process: connects like any producer, then abuses the ring it was
//! handed. Modes (first argument), then `--socket PATH`:
//!
//! - `garbage --seed S --passes N`: writes random bytes over the whole data region, N times.
//! - `header --seed S`: maps the whole memfd writable and writes random bytes over the
//!   header page too (ring header and claim word; the garbage claim position is kept
//!   8-aligned unless `--unaligned-claim 1`).
//! - `claim --pos P --seq S`: forges the claim word (offset 256 of the header page).
//! - `forge --kind K`: forges the claim word relative to its current value (the chaos
//!   harness SIGSTOPs every producer first, so the read-modify-write races no claim):
//!   `unaligned` (position + 3), `future` (position + 2^40, sequence + 1000), `wrap`
//!   (position 2^64 - 4096, sequence + 100), `backwards` (position - capacity/2),
//!   `seq-ahead` (sequence + 5000, position kept), `seq-backwards` (sequence - 50, position
//!   kept: the next frames reuse sequence numbers already passed), `repair` (position rounded up to a
//!   multiple of 8, after `unaligned`). Prints `FORGED kind=.. pos=..->.. seq=..->..`.
//! - `hold --count N [--setuid UID]`: opens N connections to the socket (as UID), never
//!   sends a Hello, prints `HELD n=..`, and opens N more every 500 ms until stdin reaches EOF.
//! - `truncate`: tries to shrink, grow, fallocate, punch holes, re-seal; prints one
//!   `OP name=.. result=..` line per attempt.
//!
//! Prints `CONNECTED ...` after the handshake and `DONE` at the end.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::Duration;

use clap::Parser;
use clap::builder::{ArgAction, BoolishValueParser};
use ringside_tests::ring_support::HostileProducer;

/// Command line (the modes are described at the top of this file).
#[derive(Debug, Parser)]
struct Args {
    /// `garbage`, `header`, `claim`, `forge`, `hold` or `truncate`.
    mode: String,
    /// Socket of the sidecar (or `ring_host`).
    #[arg(long)]
    socket: std::path::PathBuf,
    /// Seed of the garbage.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many times garbage is written.
    #[arg(long, default_value_t = 1)]
    passes: u64,
    /// `header`: let the garbage claim position be unaligned too.
    #[arg(long, action = ArgAction::Set, value_parser = BoolishValueParser::new(), default_value = "false")]
    unaligned_claim: bool,
    /// `claim`: the forged position.
    #[arg(long, default_value_t = 0)]
    pos: u64,
    /// `claim`: the forged sequence.
    #[arg(long, default_value_t = 0)]
    seq: u64,
    /// `forge`: the kind of forgery.
    #[arg(long, default_value = "unaligned")]
    kind: String,
    /// `hold`: connections per batch.
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// `hold`: connect as this uid (and gid).
    #[arg(long)]
    setuid: Option<u32>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn errno_result(ret: i64) -> String {
    if ret >= 0 {
        "ok".to_owned()
    } else {
        format!("{}", nix::errno::Errno::last())
    }
}

fn main() {
    let args = Args::parse();
    let mode = args.mode.as_str();
    let mut out = std::io::stdout();
    if mode == "hold" {
        hold(&args.socket, args.count, args.setuid);
        return;
    }
    let hostile = HostileProducer::attach(&args.socket).expect("connect");
    let fd = hostile.ring_fd.try_clone().expect("ring fd");
    let stat = nix::sys::stat::fstat(&fd).expect("fstat");
    let size = stat.st_size;
    let _ = writeln!(out, "CONNECTED pid={} size={size}", std::process::id());
    let _ = out.flush();
    let mut rng = Rng(args.seed);

    match mode {
        "garbage" => {
            let capacity = (size as u64) - 4096;
            let mut buf = vec![0u8; capacity as usize];
            for _ in 0..args.passes {
                rng.fill(&mut buf);
                // Some passes leave aligned zero words and small "lengths" around, the kind
                // of almost-plausible garbage a buggy producer leaves.
                let offset = rng.next() % capacity;
                hostile.ring.overwrite(offset, &buf);
            }
        }
        "header" => {
            // SAFETY: a fresh shared mapping of the whole memfd; this process only writes
            // through the raw pointer and never forms references into it.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(ptr, libc::MAP_FAILED, "mmap");
            let mut buf = vec![0u8; size as usize];
            for _ in 0..args.passes {
                rng.fill(&mut buf);
                if !args.unaligned_claim {
                    // Keep the garbage claim position 8-aligned: an unaligned one is a separate,
                    // known failure (see ring_garbage.rs, forged_unaligned_claim_word_panics_nobody).
                    buf[256] &= !7;
                }
                // SAFETY: buf and the mapping are both `size` bytes and do not overlap.
                unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), ptr.cast::<u8>(), buf.len()) };
            }
        }
        "claim" => {
            // Forge the claim word: position (low 64 bits) and sequence (high 64 bits).
            let mut word = [0u8; 16];
            word[..8].copy_from_slice(&args.pos.to_le_bytes());
            word[8..].copy_from_slice(&args.seq.to_le_bytes());
            let n = nix::sys::uio::pwrite(&fd, &word, 256).expect("pwrite claim word");
            assert_eq!(n, 16);
        }
        "forge" => {
            let mut word = [0u8; 16];
            let n = nix::sys::uio::pread(&fd, &mut word, 256).expect("pread claim word");
            assert_eq!(n, 16);
            let pos = u64::from_le_bytes(word[..8].try_into().expect("8 bytes"));
            let seq = u64::from_le_bytes(word[8..].try_into().expect("8 bytes"));
            let capacity = (size as u64) - 4096;
            let kind = args.kind.as_str();
            let (new_pos, new_seq) = match kind {
                "unaligned" => (pos.wrapping_add(3), seq),
                "future" => (pos.wrapping_add(1 << 40), seq + 1000),
                "wrap" => (u64::MAX - 4095, seq + 100),
                "backwards" => (pos.wrapping_sub(capacity / 2) & !7, seq),
                "seq-ahead" => (pos, seq + 5000),
                "seq-backwards" => (pos, seq.saturating_sub(50)),
                "repair" => (pos.wrapping_add(7) & !7, seq),
                other => panic!("unknown forge kind {other}"),
            };
            word[..8].copy_from_slice(&new_pos.to_le_bytes());
            word[8..].copy_from_slice(&new_seq.to_le_bytes());
            let n = nix::sys::uio::pwrite(&fd, &word, 256).expect("pwrite claim word");
            assert_eq!(n, 16);
            let _ = writeln!(
                out,
                "FORGED kind={kind} pos={pos}->{new_pos} seq={seq}->{new_seq}"
            );
        }
        "truncate" => {
            let raw = fd.as_raw_fd();
            // Not refused by the seals (only F_SEAL_WRITE would refuse it, and producers need
            // write access): punching a hole zeroes pages but keeps the size, so no SIGBUS.
            let punch_flags = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            // SAFETY: a plain syscall on an fd this process owns; the result is only reported.
            let punch = unsafe { libc::fallocate(raw, punch_flags, 4096, size - 4096) };
            let _ = writeln!(
                out,
                "INFO name=punch_hole result={}",
                errno_result(punch.into())
            );
            let byte = [0u8; 1];
            let attempts: [(&str, &dyn Fn() -> i64); 7] = [
                ("ftruncate_zero", &|| {
                    // SAFETY: a plain syscall on an fd this process owns.
                    unsafe { libc::ftruncate(raw, 0) }.into()
                }),
                ("ftruncate_shrink", &|| {
                    // SAFETY: a plain syscall on an fd this process owns.
                    unsafe { libc::ftruncate(raw, size / 2) }.into()
                }),
                ("ftruncate_grow", &|| {
                    // SAFETY: a plain syscall on an fd this process owns.
                    unsafe { libc::ftruncate(raw, size * 2) }.into()
                }),
                ("fallocate_grow", &|| {
                    // SAFETY: a plain syscall on an fd this process owns.
                    unsafe { libc::fallocate(raw, 0, 0, size * 2) }.into()
                }),
                ("fallocate_beyond", &|| {
                    // SAFETY: a plain syscall on an fd this process owns.
                    unsafe { libc::fallocate(raw, 0, size, 4096) }.into()
                }),
                ("pwrite_beyond", &|| {
                    // SAFETY: a plain syscall on an fd this process owns, one byte from a
                    // live buffer.
                    let n = unsafe { libc::pwrite(raw, byte.as_ptr().cast(), 1, size + 4096) };
                    if n == 1 { 0 } else { -1 }
                }),
                ("add_seal_write", &|| {
                    // SAFETY: a plain syscall on an fd this process owns.
                    unsafe { libc::fcntl(raw, libc::F_ADD_SEALS, libc::F_SEAL_WRITE) }.into()
                }),
            ];
            for (name, attempt) in attempts {
                let result = errno_result(attempt());
                let _ = writeln!(out, "OP name={name} result={result}");
            }
            let after = nix::sys::stat::fstat(&fd).expect("fstat").st_size;
            let _ = writeln!(out, "SIZE before={size} after={after}");
        }
        other => panic!("unknown mode {other}"),
    }
    let _ = writeln!(out, "DONE");
    let _ = out.flush();
}

/// Opens `count` raw connections that never say Hello, and holds them until stdin closes.
fn hold(socket: &std::path::Path, count: u64, setuid: Option<u32>) {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket as sock};
    if let Some(uid) = setuid {
        nix::unistd::setgroups(&[]).expect("setgroups");
        nix::unistd::setgid(nix::unistd::Gid::from_raw(uid)).expect("setgid");
        nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).expect("setuid");
    }
    let addr = UnixAddr::new(socket).expect("socket path");
    let open_batch = || {
        let mut batch = Vec::new();
        for _ in 0..count {
            let fd = sock(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .expect("socket");
            if connect(fd.as_raw_fd(), &addr).is_ok() {
                batch.push(fd);
            }
        }
        batch
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sink = [0u8; 64];
            while let Ok(n) = std::io::Read::read(&mut std::io::stdin(), &mut sink) {
                if n == 0 {
                    break;
                }
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    // Keep the host's pending slots full: a fresh batch every 500 ms (each connection
    // expires after the host's 2 s hello timeout), the older batches closed.
    let mut batches = std::collections::VecDeque::new();
    batches.push_back(open_batch());
    println!(
        "HELD n={} uid={}",
        batches.back().map_or(0, Vec::len),
        nix::unistd::getuid()
    );
    let _ = std::io::stdout().flush();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(500));
        batches.push_back(open_batch());
        if batches.len() > 5 {
            batches.pop_front();
        }
    }
}
