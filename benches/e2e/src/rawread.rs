//! The serving scenarios' second reader: one raw `h2` stream per subscriber that counts
//! what it receives without decoding it into messages.
//!
//! The tonic reader decodes every `Batch` with prost (a `Vec` of frames, a `String` topic
//! and a payload per frame), in the harness process on the same 2 cores as the server. Raw
//! loopback TCP's reader, the yardstick of the "share of TCP" goal, only reads bytes. This
//! reader sits in between: it speaks HTTP/2 and gRPC framing like any client, advertises
//! HTTP/2 frames of [`RAW_MAX_FRAME`] (h2's default is 16 KiB, so a 256 KiB batch would
//! come as 16 DATA frames), and walks each message's protobuf fields in place to count the
//! frames, their payload bytes and the losses: no allocation per frame or per batch once
//! its reassembly buffer has grown to the largest message. What a server reaches with it
//! is closer to what the server itself can send.

use crate::*;
use bytes::{Buf, Bytes, BytesMut};
use prost::Message;
use ringside_proto::v1;

/// SETTINGS_MAX_FRAME_SIZE the raw reader advertises: a whole batch in one DATA frame.
const RAW_MAX_FRAME: u32 = 1 << 20;
/// Largest gRPC message the raw reader accepts (as the tonic reader's
/// `max_decoding_message_size`).
const RAW_MAX_MESSAGE: usize = 16 << 20;

/// One HTTP/2 connection, handshaken, ready for one `Subscribe` stream.
pub(crate) struct RawConn {
    client: h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    _conn: AbortOnDrop,
}

/// Connects to the gRPC server at `endpoint` (`http://host:port`) as the raw reader:
/// TCP_NODELAY, the tonic reader's HTTP/2 windows, frames up to [`RAW_MAX_FRAME`].
pub(crate) async fn raw_connect(
    endpoint: &str,
    stream_window: u32,
    conn_window: u32,
) -> Result<RawConn, String> {
    let addr: SocketAddr = endpoint
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| format!("endpoint {endpoint}: {e}"))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(stream_window)
        .initial_connection_window_size(conn_window)
        .max_frame_size(RAW_MAX_FRAME)
        .handshake::<_, Bytes>(tcp)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let client = client.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
    Ok(RawConn {
        client,
        addr,
        _conn: AbortOnDrop(task),
    })
}

/// Subscribes from `earliest` on `conn` once `go` opens, and counts frames (and losses)
/// until `target` arrived.
pub(crate) async fn raw_read_target(
    mut conn: RawConn,
    target: u64,
    go: Arc<tokio::sync::Barrier>,
) -> Result<SubRead, String> {
    let req = http::Request::post(format!(
        "http://{}/ringside.v1.Ringside/Subscribe",
        conn.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .map_err(|e| e.to_string())?;
    let body = grpc_message(&v1::SubscribeRequest {
        start: Some(Start::Earliest(true)),
        ..Default::default()
    });
    go.wait().await;
    let start = Instant::now();
    let (resp, mut send) = conn
        .client
        .send_request(req, false)
        .map_err(|e| format!("send_request: {e}"))?;
    send.send_data(body, true)
        .map_err(|e| format!("send request body: {e}"))?;
    let resp = resp.await.map_err(|e| format!("response: {e}"))?;
    if let Some((code, msg)) = grpc_status(resp.headers()) {
        return Err(format!("refused: grpc-status {code} {msg}"));
    }
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    let (mut seen, mut max_batch) = (BatchCounts::default(), 0u64);
    while seen.frames + seen.lost < target {
        let chunk = match body.data().await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(format!("after {} frames: {e}", seen.frames)),
            None => return Err(format!("stream ended after {} frames", seen.frames)),
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        // Whole messages are counted where they arrived; only a message cut across DATA
        // frames is copied, into `buf` (at most one message plus one chunk long).
        if buf.is_empty() {
            let used = count_messages(&chunk, &mut seen, &mut max_batch)?;
            buf.extend_from_slice(&chunk[used..]);
        } else {
            buf.extend_from_slice(&chunk);
            let used = count_messages(&buf, &mut seen, &mut max_batch)?;
            buf.advance(used);
        }
    }
    let end = Instant::now();
    if seen.lost > 0 {
        return Err(format!(
            "{} frames reported lost (nothing should lap here)",
            seen.lost
        ));
    }
    Ok(SubRead {
        frames: seen.frames,
        bytes: seen.payload_bytes,
        start,
        end,
        max_batch,
    })
}

/// Counts the whole gRPC messages at the start of `bytes` into `seen` (and the largest
/// batch into `max_batch`); returns how many bytes they took. A message longer than
/// [`RAW_MAX_MESSAGE`] is an error as soon as its prefix is seen.
fn count_messages(
    mut bytes: &[u8],
    seen: &mut BatchCounts,
    max_batch: &mut u64,
) -> Result<usize, String> {
    let all = bytes.len();
    while let [_, a, b, c, d, rest @ ..] = bytes {
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        if len > RAW_MAX_MESSAGE {
            return Err(format!(
                "a message of {len} bytes, above the reader's {RAW_MAX_MESSAGE}"
            ));
        }
        if rest.len() < len {
            break;
        }
        let batch = count_batch(&rest[..len])?;
        *max_batch = (*max_batch).max(batch.frames);
        seen.frames += batch.frames;
        seen.payload_bytes += batch.payload_bytes;
        seen.lost += batch.lost;
        bytes = &rest[len..];
    }
    Ok(all - bytes.len())
}

/// A protobuf message with its gRPC prefix (uncompressed, 4-byte big-endian length).
pub(crate) fn grpc_message(msg: &impl Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// What one `Batch` carries, counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchCounts {
    /// `frames` entries.
    pub(crate) frames: u64,
    /// Sum of the frames' `payload` lengths.
    pub(crate) payload_bytes: u64,
    /// Sum of the losses' `frames`.
    pub(crate) lost: u64,
}

/// One protobuf field's value, borrowed from the message.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Calls `each(field number, value)` for every field of the message `msg`, in order.
fn walk_fields<'a>(
    mut msg: &'a [u8],
    mut each: impl FnMut(u64, Field<'a>) -> Result<(), String>,
) -> Result<(), String> {
    let varint = |m: &mut &'a [u8]| {
        prost::encoding::decode_varint(m).map_err(|e| format!("malformed batch: {e}"))
    };
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        let value = match key & 7 {
            0 => Field::Varint(varint(&mut msg)?),
            2 => {
                let len = usize::try_from(varint(&mut msg)?).unwrap_or(usize::MAX);
                if len > msg.len() {
                    return Err(format!(
                        "malformed batch: field {} of {len} bytes, {} left",
                        key >> 3,
                        msg.len()
                    ));
                }
                let (value, rest) = msg.split_at(len);
                msg = rest;
                Field::Bytes(value)
            }
            wire @ (1 | 5) => {
                let len = if wire == 1 { 8 } else { 4 };
                if len > msg.len() {
                    return Err("malformed batch: a fixed field cut short".into());
                }
                msg = &msg[len..];
                Field::Fixed
            }
            wire => return Err(format!("malformed batch: wire type {wire}")),
        };
        each(key >> 3, value)?;
    }
    Ok(())
}

/// Counts the frames, payload bytes and lost frames of an encoded `Batch`
/// (`proto/ringside/v1/ringside.proto`: `frames` = 2, `Frame.payload` = 5, `losses` = 3,
/// `Loss.frames` = 2) without decoding it into messages.
pub(crate) fn count_batch(msg: &[u8]) -> Result<BatchCounts, String> {
    let mut c = BatchCounts::default();
    walk_fields(msg, |field, value| {
        match (field, value) {
            (2, Field::Bytes(frame)) => {
                c.frames += 1;
                walk_fields(frame, |f, v| {
                    if let (5, Field::Bytes(p)) = (f, v) {
                        c.payload_bytes += p.len() as u64;
                    }
                    Ok(())
                })?;
            }
            (3, Field::Bytes(loss)) => walk_fields(loss, |f, v| {
                if let (2, Field::Varint(n)) = (f, v) {
                    c.lost += n;
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, topic: &str, payload: usize) -> v1::Frame {
        v1::Frame {
            seq,
            timestamp_ns: 1_764_770_000_000_000_000 + seq,
            topic: topic.into(),
            producer_id: 48_213,
            payload: vec![0xa5; payload].into(),
        }
    }

    #[test]
    fn counts_what_prost_decodes() {
        let batch = v1::Batch {
            ring_id: 0x5eed,
            frames: vec![
                frame(7, "load/0", 64),
                frame(8, "load/1", 0),
                frame(9, "x", 1024),
            ],
            losses: vec![
                v1::Loss {
                    reason: 1,
                    frames: 5,
                    first_seq: 2,
                },
                v1::Loss {
                    reason: 3,
                    frames: 300,
                    first_seq: 10,
                },
            ],
            resume_seq: 310,
            from_seq: 2,
            filtered: 4,
            discarded: 1,
            filler: vec![0; 300],
        };
        let bytes = batch.encode_to_vec();
        let decoded = v1::Batch::decode(&bytes[..]).expect("prost decodes its own encoding");
        let expected = BatchCounts {
            frames: decoded.frames.len() as u64,
            payload_bytes: decoded.frames.iter().map(|f| f.payload.len() as u64).sum(),
            lost: decoded.losses.iter().map(|l| l.frames).sum(),
        };
        assert_eq!(count_batch(&bytes), Ok(expected));
        assert_eq!(expected.frames, 3);
        assert_eq!(expected.payload_bytes, 1088);
        assert_eq!(expected.lost, 305);
    }

    #[test]
    fn counts_whole_messages_and_leaves_a_cut_one() {
        let batch = v1::Batch {
            frames: vec![frame(1, "t", 100), frame(2, "t", 28)],
            ..Default::default()
        };
        let one = grpc_message(&batch);
        let two = [&one[..], &one[..]].concat();
        for cut in 0..=two.len() {
            let (mut seen, mut max_batch) = (BatchCounts::default(), 0);
            let used = count_messages(&two[..cut], &mut seen, &mut max_batch).expect("valid");
            let whole = (cut / one.len()) as u64;
            assert_eq!(used, whole as usize * one.len(), "cut at {cut}");
            assert_eq!(seen.frames, 2 * whole, "cut at {cut}");
            assert_eq!(seen.payload_bytes, 128 * whole, "cut at {cut}");
        }
    }

    #[test]
    fn a_cut_message_is_an_error_not_a_count() {
        let batch = v1::Batch {
            frames: vec![frame(1, "t", 100)],
            ..Default::default()
        };
        let bytes = batch.encode_to_vec();
        for cut in 1..bytes.len() {
            assert!(
                count_batch(&bytes[..cut]).is_err(),
                "a batch cut to {cut} of {} bytes was counted",
                bytes.len()
            );
        }
    }
}
