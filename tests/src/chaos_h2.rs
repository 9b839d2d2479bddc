//! Raw-TCP HTTP/2 clients of the chaos harness (`tests/tests/chaos.rs`), which tonic cannot
//! play because they break the protocol's expectations on purpose: slowloris clients that
//! connect and say nothing, dribble the connection preface a byte at a time, or open a
//! Subscribe stream and then read a few bytes per second without ever granting HTTP/2 flow
//! control window.
//!
//! Whether the sidecar closed a connection is read from `/proc/net/tcp` (the socket left
//! ESTABLISHED: the peer sent FIN or RST), so the client never has to write (a write or a
//! PING would count as activity) or drain what the sidecar queued for it.
//!
//! Included with `#[path = "../src/chaos_h2.rs"] mod chaos_h2;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

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
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        (":method", "POST"),
        (":scheme", "http"),
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
/// `subscribe` is the encoded SubscribeRequest a `SlowReader` sends (with `token`).
pub fn slowloris(
    kind: Slowloris,
    addr: SocketAddr,
    hold: Duration,
    stop: &std::sync::atomic::AtomicBool,
    sidecar_generation: &std::sync::atomic::AtomicU64,
    token: Option<&str>,
    subscribe: &[u8],
) -> SlowEnd {
    let generation = sidecar_generation.load(std::sync::atomic::Ordering::SeqCst);
    let closed = |after: Duration| {
        if sidecar_generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
            SlowEnd::Closed(after)
        } else {
            SlowEnd::SidecarKilled
        }
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return SlowEnd::NoConnect;
    };
    let Ok(local) = s.local_addr() else {
        return SlowEnd::NoConnect;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
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
            v.extend(grpc_call(
                1,
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
    /// Answered with grpc-status RESOURCE_EXHAUSTED (over `--max-subscribers` or
    /// `--max-connections`).
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

/// grpc-status of a header map, if present.
fn grpc_status(h: &http::HeaderMap) -> Option<i32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Opens `n` Subscribe streams at once on one HTTP/2 connection, more than the sidecar's
/// SETTINGS_MAX_CONCURRENT_STREAMS: every HEADERS frame is queued before the connection is
/// first polled, so the client has not seen the server's SETTINGS yet and h2's initial send
/// limit (unbounded) lets them all out. Then classifies every stream's answer. `request` is
/// the encoded SubscribeRequest. None when the connection could not be set up.
pub async fn stream_flood(
    addr: SocketAddr,
    n: u32,
    token: Option<&str>,
    request: &[u8],
) -> Option<FloodTally> {
    let tcp = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let (mut send, conn) = h2::client::Builder::new()
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .ok()?;
    let mut body = vec![0u8];
    body.extend_from_slice(&(request.len() as u32).to_be_bytes());
    body.extend_from_slice(request);
    let body = bytes::Bytes::from(body);
    let mut tally = FloodTally::default();
    let mut responses = Vec::new();
    for _ in 0..n {
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}/ringside.v1.Ringside/Subscribe"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(()).ok()?;
        match send.send_request(req, false) {
            Ok((resp, mut stream)) => {
                tally.opened += 1;
                let _ = stream.send_data(body.clone(), true);
                responses.push(resp);
            }
            Err(e) => {
                eprintln!("stream flood: send_request refused locally: {e}");
                tally.other += 1;
            }
        }
    }
    let conn_task = tokio::spawn(conn);
    let mut bodies = Vec::new();
    for resp in responses {
        match tokio::time::timeout(Duration::from_secs(5), resp).await {
            Err(_) => tally.no_answer += 1,
            Ok(Err(e)) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => {
                tally.refused_stream += 1
            }
            Ok(Err(e)) if e.is_io() || e.is_go_away() => tally.conn_closed += 1,
            Ok(Err(e)) => {
                eprintln!("stream flood: stream error {e}");
                tally.other += 1;
            }
            Ok(Ok(response)) => {
                if let Some(code) = grpc_status(response.headers()) {
                    // Trailers-only: refused before any data.
                    if code == 8 {
                        tally.resource_exhausted += 1;
                    } else {
                        eprintln!("stream flood: grpc-status {code}");
                        tally.other += 1;
                    }
                    continue;
                }
                let mut b = response.into_body();
                match tokio::time::timeout(Duration::from_secs(5), b.data()).await {
                    Ok(Some(Ok(_))) => tally.granted += 1,
                    Ok(None) => {
                        let code = match b.trailers().await {
                            Ok(Some(t)) => grpc_status(&t),
                            _ => None,
                        };
                        if code == Some(8) {
                            tally.resource_exhausted += 1;
                        } else {
                            eprintln!("stream flood: ended without data, grpc-status {code:?}");
                            tally.other += 1;
                        }
                    }
                    Ok(Some(Err(e))) if e.is_io() || e.is_go_away() => tally.conn_closed += 1,
                    Ok(Some(Err(e))) => {
                        eprintln!("stream flood: body error {e}");
                        tally.other += 1;
                    }
                    Err(_) => tally.no_answer += 1,
                }
                bodies.push(b);
            }
        }
    }
    drop(bodies);
    drop(send);
    conn_task.abort();
    Some(tally)
}
