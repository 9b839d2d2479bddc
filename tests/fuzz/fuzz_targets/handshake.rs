//! `handshake`: the producer handshake (Hello, Welcome) fuzzed through the real Unix socket.
//!
//! The decoders live in a private module of `ringside-client`, so both directions are driven
//! through real `SOCK_SEQPACKET` sockets instead:
//!
//! - **Hello** (mode even): up to four arbitrary messages (arbitrary lengths, up to 64 KiB,
//!   optionally carrying fds) are sent to a real `RingHost` on a temp socket, then the
//!   connection is closed. Afterwards a real `Producer` must still be admitted and its frame
//!   must land in the host's ring.
//! - **Welcome** (mode odd): a fake sidecar answers a real `Producer::connect` with arbitrary
//!   bytes and an input-chosen set of fds (none, the real ring fd, the ring fd three times,
//!   or a mismatched memfd). The producer must not panic or hang; if it claims to be
//!   connected, sending must not crash either.
//!
//! Invariants: no panic in the host thread or the producer, no hang (libFuzzer's timeout),
//! and the host keeps admitting real producers.
#![no_main]

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nix::sys::socket::{
    AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv, sendmsg,
    setsockopt, socket, sockopt,
};
use ringside_client::Producer;
use ringside_ring::{HostOptions, RingConfig, RingHost, RingView};

const CONFIG: RingConfig = RingConfig {
    capacity: 64 * 1024,
    max_payload: 1024,
};

struct HostRig {
    host: RingHost,
    path: PathBuf,
    view: Arc<RingView>,
}

fn host() -> &'static HostRig {
    static HOST: OnceLock<HostRig> = OnceLock::new();
    HOST.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("ringside-fuzz-hs-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let host = RingHost::start(HostOptions {
            socket_path: path.clone(),
            ring: CONFIG,
            max_producers: 64,
            adopt_grace: Duration::ZERO,
            ..HostOptions::default()
        })
        .expect("ring host starts");
        let view = host.ring();
        HostRig { host, path, view }
    })
}

/// A junk memfd (wrong size, no seals) to hand over where a ring fd is expected.
fn junk_fd() -> OwnedFd {
    let fd =
        nix::sys::memfd::memfd_create("ringside-fuzz-junk", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .expect("memfd");
    nix::unistd::ftruncate(&fd, 8192).expect("ftruncate");
    fd
}

fn fds_for(choice: u8, ring: BorrowedFd<'_>, junk: BorrowedFd<'_>) -> Vec<RawFd> {
    match choice % 5 {
        0 => vec![],
        1 => vec![ring.as_raw_fd()],
        2 => vec![ring.as_raw_fd(); 3],
        3 => vec![junk.as_raw_fd(), junk.as_raw_fd(), junk.as_raw_fd()],
        _ => vec![ring.as_raw_fd(), junk.as_raw_fd(), junk.as_raw_fd()],
    }
}

fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    let _ = sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None);
}

/// Splits the input into messages: `[len_lo][len_hi][flags]` then `len` bytes, where bit 0
/// of flags repeats the message body up to 64 KiB (oversized) and bits 1.. pick fds.
fn messages(data: &[u8]) -> Vec<(Vec<u8>, u8)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() && out.len() < 4 {
        let len = usize::from(u16::from_le_bytes([
            data[at],
            *data.get(at + 1).unwrap_or(&0),
        ]));
        let flags = data.get(at + 2).copied().unwrap_or(0);
        at += 3;
        let end = (at + len % 512).min(data.len());
        let mut body = data[at.min(end)..end].to_vec();
        at = end;
        if flags & 1 == 1 && !body.is_empty() {
            let target = len.max(body.len()).min(64 * 1024);
            while body.len() < target {
                let more = body.clone();
                body.extend_from_slice(&more[..(target - body.len()).min(more.len())]);
            }
        }
        out.push((body, flags >> 1));
    }
    out
}

fn fuzz_hello(data: &[u8]) {
    let rig = host();
    let junk = junk_fd();
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    let addr = UnixAddr::new(rig.path.as_path()).expect("addr");
    connect(sock.as_raw_fd(), &addr).expect("connect to host");
    let _ = setsockopt(
        &sock,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(0, 20_000),
    );
    for (body, fd_choice) in messages(data) {
        let fds = fds_for(fd_choice, rig.view.fd().as_fd(), junk.as_fd());
        send_with_fds(sock.as_fd(), &body, &fds);
    }
    // Read whatever the host answers (a Welcome or a refusal), bounded by the timeout.
    let mut buf = [0u8; 512];
    let _ = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty());
    drop(sock);

    // The host must still admit a real producer, whose frame lands in the ring.
    let before = rig.view.tail().seq;
    let producer = Producer::connect(&rig.path).expect("a real producer is admitted");
    // `connect` returns a producer even when its first handshake failed transiently (it
    // retries in the background); give it a bounded while before calling the host wedged.
    if !producer.sidecar_connected() {
        eprintln!(
            "handshake fuzz: first handshake did not complete ({:?}); waiting",
            producer.last_error()
        );
        assert!(
            producer.wait_connected(Duration::from_secs(10)),
            "the host no longer admits a real producer: {:?} (host stats {:?})",
            producer.last_error(),
            rig.host.stats()
        );
    }
    producer.send("fuzz/after", b"still alive").expect("send");
    let after = rig.view.tail().seq;
    assert!(
        after > before,
        "a real producer's frame did not reach the host's ring after hostile hello bytes (host stats {:?})",
        rig.host.stats()
    );
}

/// One fake-sidecar job: a listener, and the bytes and fds to answer the Hello with.
struct Job {
    listener: UnixListener,
    reply: Vec<u8>,
    fd_choice: u8,
}

fn fake_sidecar() -> &'static Mutex<(Sender<Job>, Receiver<()>)> {
    static FAKE: OnceLock<Mutex<(Sender<Job>, Receiver<()>)>> = OnceLock::new();
    FAKE.get_or_init(|| {
        let (job_tx, job_rx) = channel::<Job>();
        let (done_tx, done_rx) = channel::<()>();
        std::thread::spawn(move || {
            let rig = host();
            let junk = junk_fd();
            for job in job_rx {
                if let Ok((conn, _)) = job.listener.accept() {
                    let conn = OwnedFd::from(conn);
                    let mut hello = [0u8; 64];
                    let _ = recv(conn.as_raw_fd(), &mut hello, MsgFlags::empty());
                    let fds = fds_for(job.fd_choice, rig.view.fd().as_fd(), junk.as_fd());
                    send_with_fds(conn.as_fd(), &job.reply, &fds);
                }
                let _ = done_tx.send(());
            }
        });
        Mutex::new((job_tx, done_rx))
    })
}

fn seqpacket_listener(path: &std::path::Path) -> UnixListener {
    let _ = std::fs::remove_file(path);
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    let addr = UnixAddr::new(path).expect("addr");
    nix::sys::socket::bind(sock.as_raw_fd(), &addr).expect("bind");
    nix::sys::socket::listen(&sock, nix::sys::socket::Backlog::new(4).expect("backlog"))
        .expect("listen");
    UnixListener::from(sock)
}

fn fuzz_welcome(data: &[u8]) {
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "ringside-fuzz-fake-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let listener = seqpacket_listener(&path);
    let fd_choice = data.first().copied().unwrap_or(0);
    let reply = data.get(1..).unwrap_or(&[]).to_vec();
    let fake = fake_sidecar().lock().expect("fake sidecar");
    fake.0
        .send(Job {
            listener,
            reply,
            fd_choice,
        })
        .expect("fake sidecar alive");
    let producer = Producer::connect(&path);
    let _ = fake.1.recv_timeout(Duration::from_secs(5));
    drop(fake);
    let _ = std::fs::remove_file(&path);
    if let Ok(producer) = producer {
        // Whatever it believes, a send must not crash (it writes or counts a drop).
        let _ = producer.send("fuzz/welcome", b"x");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        fuzz_hello(rest);
    } else {
        fuzz_welcome(rest);
    }
});
