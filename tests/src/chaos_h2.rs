//! Raw-TCP HTTP/2 clients of the chaos harness (`tests/tests/chaos.rs`), which tonic cannot
//! play because they break the protocol's expectations on purpose: slowloris clients that
//! connect and say nothing, dribble the connection preface a byte at a time, or open a
//! Subscribe stream and then read a few bytes per second without ever granting HTTP/2 flow
//! control window; and a stream flood that sends more Subscribe streams at once than the
//! sidecar's SETTINGS_MAX_CONCURRENT_STREAMS (an HTTP/2 library holds the excess back).
//!
//! Whether the sidecar closed a connection is read from `/proc/net/tcp` (the socket left
//! ESTABLISHED: the peer sent FIN or RST), so the client never has to write (a write or a
//! PING would count as activity) or drain what the sidecar queued for it.
//!
//! Against a TLS sidecar (`tls` given), the slow reader and the stream flood speak HTTP/2
//! over TLS (ALPN `h2`); the silent and dribbling clients stay below TLS (they test the
//! time before any handshake).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chaos_tls::Conn;

/// The HTTP/2 client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame: 9-byte header and payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), first byte's high bits `high`.
fn hpack_int(out: &mut Vec<u8>, mut v: usize, n: u32, high: u8) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(high | v as u8);
        return;
    }
    out.push(high | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// An HPACK header block of literal fields without indexing and without Huffman coding.
pub fn hpack_literals(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        hpack_int(&mut out, name.len(), 7, 0);
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, value.len(), 7, 0);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// HEADERS (END_HEADERS) and DATA (END_STREAM) frames of one gRPC call on `stream`,
/// `message` being the encoded protobuf request.
pub fn grpc_call(
    stream: u32,
    authority: &str,
    path: &str,
    token: Option<&str>,
    message: &[u8],
) -> Vec<u8> {
    grpc_call_scheme(stream, "http", authority, path, token, message)
}

/// [`grpc_call`] with the `:scheme` (`https` over TLS).
pub fn grpc_call_scheme(
    stream: u32,
    scheme: &str,
    authority: &str,
    path: &str,
    token: Option<&str>,
    message: &[u8],
) -> Vec<u8> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        (":method", "POST"),
        (":scheme", scheme),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    let mut out = frame(0x1, 0x4, stream, &hpack_literals(&headers));
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    out.extend(frame(0x0, 0x1, stream, &body));
    out
}

/// True when the TCP connection from `local` to `remote` (IPv4) is no longer ESTABLISHED
/// on this side: the peer sent FIN (CLOSE_WAIT) or RST (gone). None when `/proc/net/tcp`
/// cannot be read.
pub fn peer_closed(local: SocketAddr, remote: SocketAddr) -> Option<bool> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let hex = |a: SocketAddr| -> Option<String> {
        match a {
            SocketAddr::V4(v4) => Some(format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(v4.ip().octets()),
                v4.port()
            )),
            SocketAddr::V6(_) => None,
        }
    };
    let (l, r) = (hex(local)?, hex(remote)?);
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() > 3 && cols[1] == l && cols[2] == r {
            return Some(cols[3] != "01");
        }
    }
    Some(true)
}

/// What a slowloris client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slowloris {
    /// Connects and sends nothing.
    Silent,
    /// Sends the preface and an empty SETTINGS frame one byte every 500 ms.
    Dribble,
    /// Opens a Subscribe stream promptly, then reads 16 bytes a second and never sends
    /// WINDOW_UPDATE or a SETTINGS ACK.
    SlowReader,
}

impl Slowloris {
    /// Every kind.
    pub const ALL: [Slowloris; 3] = [Slowloris::Silent, Slowloris::Dribble, Slowloris::SlowReader];
}

/// How a slowloris connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowEnd {
    /// Could not connect at all.
    NoConnect,
    /// The sidecar closed it after this long, by itself (a limit).
    Closed(Duration),
    /// It was closed because the harness killed the sidecar meanwhile.
    SidecarKilled,
    /// Still open after the whole `hold`.
    Open,
    /// Still open when the harness stopped it early (end of the fault phase).
    Stopped,
}

/// Runs one slowloris client against `addr` for at most `hold` (or until `stop`);
/// `subscribe` is the encoded SubscribeRequest a `SlowReader` sends (with `token`, over TLS
/// when `tls` is given).
#[allow(clippy::too_many_arguments)]
pub fn slowloris(
    kind: Slowloris,
    addr: SocketAddr,
    hold: Duration,
    stop: &std::sync::atomic::AtomicBool,
    sidecar_generation: &std::sync::atomic::AtomicU64,
    token: Option<&str>,
    subscribe: &[u8],
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> SlowEnd {
    let generation = sidecar_generation.load(std::sync::atomic::Ordering::SeqCst);
    let closed = |after: Duration| {
        if sidecar_generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            SlowEnd::Closed(after)
        } else {
            SlowEnd::SidecarKilled
        }
    };
    let tls = tls.filter(|_| kind == Slowloris::SlowReader);
    let Ok(mut s) = Conn::connect(addr, Duration::from_secs(2), tls) else {
        return SlowEnd::NoConnect;
    };
    let Ok(local) = s.tcp().local_addr() else {
        return SlowEnd::NoConnect;
    };
    let _ = s.tcp().set_read_timeout(Some(Duration::from_millis(50)));
    let scheme = if s.is_tls() { "https" } else { "http" };
    let start = Instant::now();
    let mut script: Vec<u8> = match kind {
        Slowloris::Silent => Vec::new(),
        Slowloris::Dribble => {
            let mut v = PREFACE.to_vec();
            v.extend(frame(0x4, 0, 0, &[]));
            v
        }
        Slowloris::SlowReader => {
            let mut v = PREFACE.to_vec();
            v.extend(frame(0x4, 0, 0, &[]));
            v.extend(grpc_call_scheme(
                1,
                scheme,
                &addr.to_string(),
                "/ringside.v1.Ringside/Subscribe",
                token,
                subscribe,
            ));
            v
        }
    };
    if kind == Slowloris::SlowReader && s.write_all(&script).is_err() {
        return closed(start.elapsed());
    }
    if kind == Slowloris::SlowReader {
        script.clear();
    }
    script.reverse();
    let mut next_tick = start;
    while start.elapsed() < hold {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return SlowEnd::Stopped;
        }
        if peer_closed(local, addr) == Some(true) {
            return closed(start.elapsed());
        }
        if Instant::now() >= next_tick {
            next_tick += match kind {
                Slowloris::Dribble => Duration::from_millis(500),
                _ => Duration::from_secs(1),
            };
            match kind {
                Slowloris::Silent => {}
                Slowloris::Dribble => {
                    if let Some(b) = script.pop()
                        && s.write_all(&[b]).is_err()
                    {
                        return closed(start.elapsed());
                    }
                }
                Slowloris::SlowReader => {
                    let mut buf = [0u8; 16];
                    match s.read(&mut buf) {
                        Ok(0) => return SlowEnd::Closed(start.elapsed()),
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return SlowEnd::Closed(start.elapsed()),
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    SlowEnd::Open
}

/// How the streams of one flood ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FloodTally {
    /// Streams opened (HEADERS sent).
    pub opened: u64,
    /// Answered with response headers and then data: a granted Subscribe.
    pub granted: u64,
    /// Reset by the sidecar's HTTP/2 layer with REFUSED_STREAM (over
    /// SETTINGS_MAX_CONCURRENT_STREAMS).
    pub refused_stream: u64,
    /// Answered trailers-only (HEADERS with END_STREAM, no data): a gRPC refusal, which is
    /// RESOURCE_EXHAUSTED here (over `--max-subscribers` or `--max-connections`; the status
    /// is not decoded: that needs HPACK with Huffman).
    pub resource_exhausted: u64,
    /// The connection failed under the stream (closed or GOAWAY): e.g. the harness's other
    /// clients had every `--max-connections` slot, so this was an overflow connection,
    /// answered RESOURCE_EXHAUSTED and closed after 2 s.
    pub conn_closed: u64,
    /// Any other answer (another status, another reset).
    pub other: u64,
    /// No answer at all within 5 s: queued (must be 0).
    pub no_answer: u64,
}

/// Opens `n` Subscribe streams at once on one raw HTTP/2 connection, more than the
/// sidecar's SETTINGS_MAX_CONCURRENT_STREAMS: the preface, SETTINGS and all `n` HEADERS+DATA
/// pairs go out in one write before anything is read, so the sidecar receives every stream
/// (an HTTP/2 library would hold the excess back once it has read the server's SETTINGS).
/// Then it reads for up to 5 s, acknowledging SETTINGS and PINGs and granting 1 GiB of
/// flow-control window (so granted streams never stall), and classifies each stream:
/// DATA = granted, RST_STREAM(REFUSED_STREAM), a trailers-only answer (HEADERS with
/// END_STREAM: a gRPC refusal, RESOURCE_EXHAUSTED expected; HPACK is not decoded), the
/// connection closing under it, or no answer. `request` is the encoded SubscribeRequest.
/// Over TLS when `tls` is given. None when it could not connect.
pub fn stream_flood(
    addr: SocketAddr,
    n: u32,
    token: Option<&str>,
    request: &[u8],
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Option<FloodTally> {
    let mut s = Conn::connect(addr, Duration::from_secs(2), tls).ok()?;
    let _ = s.tcp().set_read_timeout(Some(Duration::from_millis(100)));
    let scheme = if s.is_tls() { "https" } else { "http" };
    let mut out = PREFACE.to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 1 GiB, and 1 GiB more for the connection.
    let mut settings = vec![0x00, 0x04];
    settings.extend_from_slice(&(1u32 << 30).to_be_bytes());
    out.extend(frame(0x4, 0, 0, &settings));
    out.extend(frame(0x8, 0, 0, &(1u32 << 30).to_be_bytes()));
    let authority = addr.to_string();
    for i in 0..n {
        out.extend(grpc_call_scheme(
            2 * i + 1,
            scheme,
            &authority,
            "/ringside.v1.Ringside/Subscribe",
            token,
            request,
        ));
    }
    let mut tally = FloodTally {
        opened: u64::from(n),
        ..FloodTally::default()
    };
    if s.write_all(&out).is_err() {
        tally.conn_closed = u64::from(n);
        return Some(tally);
    }
    // Per stream (index (id - 1) / 2): answered yet?
    let mut done = vec![false; n as usize];
    let mut left = n as usize;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut closed = false;
    while left > 0 && Instant::now() < deadline && !closed {
        match s.read(&mut chunk) {
            Ok(0) => closed = true,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => closed = true,
        }
        // Parse whole frames.
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let id = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload: Vec<u8> = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            let slot = (id as usize)
                .checked_sub(1)
                .map(|x| x / 2)
                .filter(|&i| id % 2 == 1 && i < done.len() && !done[i]);
            match kind {
                // SETTINGS (not an ACK): acknowledge.
                0x4 if flags & 0x1 == 0 => {
                    let _ = s.write_all(&frame(0x4, 0x1, 0, &[]));
                }
                // PING (not an ACK): answer, so keepalive does not close us.
                0x6 if flags & 0x1 == 0 => {
                    let _ = s.write_all(&frame(0x6, 0x1, 0, &payload));
                }
                // GOAWAY: the connection is going.
                0x7 => closed = true,
                0x3 => {
                    if let Some(i) = slot {
                        let code = payload
                            .get(..4)
                            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                        if code == Some(0x7) {
                            tally.refused_stream += 1;
                        } else {
                            eprintln!("stream flood: stream {id} reset with {code:?}");
                            tally.other += 1;
                        }
                        done[i] = true;
                        left -= 1;
                    }
                }
                // HEADERS with END_STREAM and no DATA before: trailers-only (refused).
                0x1 if flags & 0x1 != 0 => {
                    if let Some(i) = slot {
                        tally.resource_exhausted += 1;
                        done[i] = true;
                        left -= 1;
                    }
                }
                0x0 => {
                    if let Some(i) = slot {
                        tally.granted += 1;
                        done[i] = true;
                        left -= 1;
                    }
                }
                _ => {}
            }
        }
    }
    if closed {
        tally.conn_closed += left as u64;
    } else {
        tally.no_answer += left as u64;
    }
    Some(tally)
}
