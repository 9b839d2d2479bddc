//! A small grpc-web client over HTTP/1.1 (plain or TLS), as a browser's grpc-web library
//! speaks it: one `POST` with `content-type: application/grpc-web+proto`, a chunked
//! response body of grpc-web frames (flag byte, 4-byte big-endian length, payload), data
//! frames (flag 0x00) with one message each and a trailers frame (flag 0x80) with
//! `grpc-status` and `grpc-message` as text. Used by the chaos harness's grpc-web
//! subscriber.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chaos_tls::Conn;

/// Most bytes of one grpc-web frame accepted (a batch is at most `--subscriber-buffer`).
const MAX_FRAME: usize = 64 << 20;

/// What the stream said next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// One message (an encoded protobuf).
    Message(Vec<u8>),
    /// The trailers: `grpc-status` and `grpc-message`.
    Trailers {
        /// The status code (0 = OK).
        status: i32,
        /// The message, percent-decoding left undone.
        message: String,
    },
    /// Nothing within the timeout.
    Timeout,
}

/// One grpc-web call's response stream.
#[derive(Debug)]
pub struct GrpcWebStream {
    conn: Conn,
    /// Received, not yet de-chunked bytes.
    raw: Vec<u8>,
    /// De-chunked body bytes not yet parsed into frames.
    body: Vec<u8>,
    /// Bytes left in the current chunk, or None between chunks.
    chunk_left: Option<usize>,
    /// The last chunk was read.
    ended: bool,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Starts a server-streaming grpc-web call of `path` with the encoded request `message`,
/// and reads the response head. `Err` on a transport error or a non-200 answer.
pub fn call(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    path: &str,
    token: Option<&str>,
    message: &[u8],
) -> io::Result<GrpcWebStream> {
    let mut conn = Conn::connect(addr, Duration::from_secs(2), tls)?;
    conn.tcp()
        .set_read_timeout(Some(Duration::from_millis(100)))?;
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\naccept: application/grpc-web+proto\r\n{auth}content-length: {}\r\n\r\n",
        message.len() + 5
    )
    .into_bytes();
    req.push(0);
    req.extend_from_slice(&(message.len() as u32).to_be_bytes());
    req.extend_from_slice(message);
    conn.write_all(&req)?;
    conn.flush()?;
    let mut s = GrpcWebStream {
        conn,
        raw: Vec::new(),
        body: Vec::new(),
        chunk_left: None,
        ended: false,
    };
    // The response head.
    let deadline = Instant::now() + Duration::from_secs(3);
    let head_end = loop {
        if let Some(i) = s.raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no response head"));
        }
        if !s.fill()? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the response head",
            ));
        }
    };
    let head = String::from_utf8_lossy(&s.raw[..head_end]).to_ascii_lowercase();
    s.raw.drain(..head_end);
    if !head.starts_with("http/1.1 200") {
        return Err(invalid(format!(
            "grpc-web answer: {}",
            head.lines().next().unwrap_or("")
        )));
    }
    if !head.contains("transfer-encoding: chunked") {
        // A whole (trailers-only) body with a content-length: take it as one chunk.
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        s.chunk_left = Some(len);
    }
    Ok(s)
}

impl GrpcWebStream {
    /// Reads more bytes from the connection; false at EOF. A read timeout is not an error.
    fn fill(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 64 * 1024];
        match self.conn.read(&mut buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Moves de-chunked bytes from `raw` to `body`.
    fn dechunk(&mut self) -> io::Result<()> {
        loop {
            match self.chunk_left {
                Some(0) if !self.ended && self.raw.starts_with(b"\r\n") => {
                    self.raw.drain(..2);
                    self.chunk_left = None;
                }
                Some(0) => return Ok(()),
                Some(n) => {
                    let take = n.min(self.raw.len());
                    if take == 0 {
                        return Ok(());
                    }
                    self.body.extend(self.raw.drain(..take));
                    self.chunk_left = Some(n - take);
                }
                None => {
                    let Some(i) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                        return Ok(());
                    };
                    let line = String::from_utf8_lossy(&self.raw[..i]).to_string();
                    let size =
                        usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
                    self.raw.drain(..i + 2);
                    if size == 0 {
                        self.ended = true;
                        self.chunk_left = Some(0);
                        return Ok(());
                    }
                    self.chunk_left = Some(size);
                }
            }
        }
    }

    /// The next event within `timeout`.
    pub fn next(&mut self, timeout: Duration) -> io::Result<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            self.dechunk()?;
            if self.body.len() >= 5 {
                let flag = self.body[0];
                let len =
                    u32::from_be_bytes([self.body[1], self.body[2], self.body[3], self.body[4]])
                        as usize;
                if len > MAX_FRAME {
                    return Err(invalid(format!("a {len}-byte grpc-web frame")));
                }
                if self.body.len() >= 5 + len {
                    let payload: Vec<u8> = self.body[5..5 + len].to_vec();
                    self.body.drain(..5 + len);
                    if flag & 0x80 == 0 {
                        return Ok(Event::Message(payload));
                    }
                    let text = String::from_utf8_lossy(&payload).to_string();
                    let field = |name: &str| {
                        text.lines().find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case(name)
                                .then(|| v.trim().to_string())
                        })
                    };
                    return Ok(Event::Trailers {
                        status: field("grpc-status")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(-1),
                        message: field("grpc-message").unwrap_or_default(),
                    });
                }
            }
            if self.ended {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the body ended without trailers",
                ));
            }
            if Instant::now() >= deadline {
                return Ok(Event::Timeout);
            }
            if !self.fill()? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
        }
    }

    /// True when the call runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }
}
