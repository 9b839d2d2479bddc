//! `preencoded-server`: the serving baseline named in shared/BRIEF.md, "a plain
//! tonic server that streams pre-encoded bytes".
//!
//! At start it builds `ringside.v1.Batch` messages once with prost (the same
//! frame sizes, topics and frames per batch as ringside sends), keeps them in
//! memory as encoded `Bytes` (at most `--bytes` of them), and answers every
//! `ringside.v1.Ringside/Subscribe` call by streaming them, cyclically and
//! without end, through a pass-through codec: the only per-message work is
//! tonic's copy of the bytes into its encode buffer. The client stops by
//! cancelling the call. Any request is accepted; `start` and filters are
//! ignored. Other methods answer UNIMPLEMENTED.
//!
//! Memory is bounded: the pre-encoded set (`--bytes`), plus tonic's encode
//! buffer and hyper's send buffer per stream.
//!
//! With `--paced-rate R`, it is instead a plain latency comparison for the serving
//! stack (tonic, HTTP/2, loopback TCP and the reader), without a ring: each `Subscribe`
//! gets a thread that paces frames exactly as `ringside load --rate R` does (a
//! 200 µs sleep whenever it is ahead, then every frame due), stamps each frame's
//! payload bytes 8..16 with the clock as it is built, and hands every burst as one
//! `Batch` to the stream through a bounded tokio channel (a thread-to-worker
//! wake-up, as a producer's doorbell ring is), then the same path to the socket.

use bytes::{BufMut, Bytes};
use clap::Parser;
use prost::Message;
use ringside_proto::v1::{Batch, Frame, SubscribeRequest};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio_stream::{Stream, StreamExt};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::{Status, server::NamedService};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "A plain tonic server streaming pre-encoded ringside.v1.Batch messages")]
struct Args {
    /// gRPC address.
    #[arg(long, default_value = "127.0.0.1:50071")]
    listen: std::net::SocketAddr,
    /// Payload bytes per frame.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Frames per batch (match what ringside sends for the same frame size).
    #[arg(long, default_value_t = 240)]
    frames_per_batch: usize,
    /// Encoded bytes to pre-build (whole batches; at least one batch).
    #[arg(long, default_value_t = 64 << 20)]
    bytes: u64,
    /// Topics `load/0` ... `load/K-1`, round-robin (as `ringside load`).
    #[arg(long, default_value_t = 4)]
    topics: u64,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    worker_threads: usize,
    /// Paced mode: frames per second per `Subscribe`, stamped as they are built
    /// (0 = stream the pre-encoded set as fast as the client takes it).
    #[arg(long, default_value_t = 0)]
    paced_rate: u64,
    /// Paced mode: frames per `Subscribe`, then the stream ends.
    #[arg(long, default_value_t = 100_000)]
    paced_count: u64,
}

/// Paced mode: batches waiting for the stream, at most (the producer thread waits
/// when the client does not read). With [`PACED_BURST`], the queue holds at most
/// 64 x 256 frames: about 1.5 MiB of 64 B frames, 16 x `--size` x 1024 bytes in general.
const PACED_QUEUE: usize = 64;
/// Paced mode: frames in one batch, at most (a burst due at once is split).
const PACED_BURST: u64 = 256;

/// Encodes `Bytes` as they are (they already are an encoded message) and
/// decodes requests with prost.
#[derive(Debug, Clone, Copy, Default)]
struct PassCodec;

/// The pass-through encoder: one `put_slice` per message.
#[derive(Debug, Clone, Copy, Default)]
struct PassEncoder;

/// The request decoder (prost).
#[derive(Debug, Clone, Copy, Default)]
struct RequestDecoder;

impl Encoder for PassEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RequestDecoder {
    type Item = SubscribeRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<SubscribeRequest>, Status> {
        SubscribeRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

impl Codec for PassCodec {
    type Encode = Bytes;
    type Decode = SubscribeRequest;
    type Encoder = PassEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> PassEncoder {
        PassEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

/// The pre-encoded messages, streamed cyclically.
struct Cycle {
    batches: Arc<Vec<Bytes>>,
    next: usize,
}

impl Stream for Cycle {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(b) = this.batches.get(this.next) else {
            return Poll::Ready(None);
        };
        this.next = (this.next + 1) % this.batches.len();
        Poll::Ready(Some(Ok(b.clone())))
    }
}

/// What a `Subscribe` call streams.
#[derive(Clone)]
enum Source {
    /// The pre-encoded set, cyclically.
    Preencoded(Arc<Vec<Bytes>>),
    /// Paced frames of `size` bytes, `rate` per second, `count` in all.
    Paced { rate: u64, count: u64, size: usize },
}

/// A `Subscribe` response stream.
type BatchStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// The `Subscribe` method.
struct SubscribeSvc(Source);

impl tonic::server::ServerStreamingService<SubscribeRequest> for SubscribeSvc {
    type Response = Bytes;
    type ResponseStream = BatchStream;
    type Future = std::future::Ready<Result<tonic::Response<BatchStream>, Status>>;

    fn call(&mut self, _request: tonic::Request<SubscribeRequest>) -> Self::Future {
        let stream: BatchStream = match &self.0 {
            Source::Preencoded(batches) => Box::pin(Cycle {
                batches: Arc::clone(batches),
                next: 0,
            }),
            &Source::Paced { rate, count, size } => {
                let (tx, rx) = tokio::sync::mpsc::channel(PACED_QUEUE);
                let spawned = std::thread::Builder::new()
                    .name("paced".into())
                    .spawn(move || pace(&tx, rate, count, size));
                if let Err(e) = spawned {
                    return std::future::ready(Err(Status::internal(format!(
                        "cannot start the pacing thread: {e}"
                    ))));
                }
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok))
            }
        };
        std::future::ready(Ok(tonic::Response::new(stream)))
    }
}

/// Paced mode: `count` frames at `rate` per second, paced as `ringside load --rate`
/// paces them, each burst encoded as one `Batch` and sent to the stream.
fn pace(tx: &tokio::sync::mpsc::Sender<Bytes>, rate: u64, count: u64, size: usize) {
    let mut payload = vec![0u8; size];
    for (i, b) in payload.iter_mut().enumerate().skip(16) {
        *b = (i as u8).wrapping_mul(31);
    }
    let start = std::time::Instant::now();
    let mut sent = 0u64;
    while sent < count {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(count);
        if sent >= due {
            std::thread::sleep(std::time::Duration::from_micros(200));
            continue;
        }
        let frames = (sent..due.min(sent + PACED_BURST))
            .map(|seq| {
                let now = ringside_naive::now_ns();
                if size >= 16 {
                    payload[..8].copy_from_slice(&seq.to_le_bytes());
                    payload[8..16].copy_from_slice(&now.to_le_bytes());
                }
                Frame {
                    seq,
                    timestamp_ns: now,
                    topic: format!("load/{}", seq % 4),
                    producer_id: 1,
                    payload: Bytes::copy_from_slice(&payload),
                }
            })
            .collect::<Vec<_>>();
        sent += frames.len() as u64;
        let batch = Batch {
            ring_id: 0x5eed_5eed_5eed_5eed,
            frames,
            resume_seq: sent,
            ..Batch::default()
        };
        if tx
            .blocking_send(Bytes::from(batch.encode_to_vec()))
            .is_err()
        {
            return; // the client went away
        }
    }
}

/// The `ringside.v1.Ringside` service, `Subscribe` only.
#[derive(Clone)]
struct Svc(Source);

impl NamedService for Svc {
    const NAME: &'static str = ringside_proto::SERVICE_NAME;
}

impl Service<http::Request<tonic::body::Body>> for Svc {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() == ringside_proto::SUBSCRIBE_PATH {
            let method = SubscribeSvc(self.0.clone());
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(PassCodec);
                Ok(grpc.server_streaming(method, req).await)
            })
        } else {
            Box::pin(async move {
                Ok(Status::unimplemented("preencoded-server serves Subscribe only").into_http())
            })
        }
    }
}

/// Builds the batches: `frames_per_batch` frames of `size` bytes each, the payload
/// laid out as `ringside load` writes it (counter, timestamp, fill pattern).
fn build(args: &Args) -> Vec<Bytes> {
    let per = args.frames_per_batch.max(1);
    let topics: Vec<String> = (0..args.topics.max(1))
        .map(|i| format!("load/{i}"))
        .collect();
    let mut fill = vec![0u8; args.size];
    for (i, b) in fill.iter_mut().enumerate().skip(16) {
        *b = (i as u8).wrapping_mul(31);
    }
    let now = ringside_naive::now_ns();
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut seq = 0u64;
    while total < args.bytes || out.is_empty() {
        let frames = (0..per)
            .map(|_| {
                let mut payload = fill.clone();
                if args.size >= 16 {
                    payload[..8].copy_from_slice(&seq.to_le_bytes());
                    payload[8..16].copy_from_slice(&(now + seq).to_le_bytes());
                }
                let f = Frame {
                    seq,
                    timestamp_ns: now + seq,
                    topic: topics[(seq % topics.len() as u64) as usize].clone(),
                    producer_id: 1,
                    payload: Bytes::from(payload),
                };
                seq += 1;
                f
            })
            .collect();
        let batch = Batch {
            ring_id: 0x5eed_5eed_5eed_5eed,
            frames,
            losses: Vec::new(),
            resume_seq: seq,
            ..Batch::default()
        };
        let bytes = Bytes::from(batch.encode_to_vec());
        total += bytes.len() as u64;
        out.push(bytes);
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let source = if args.paced_rate > 0 {
        eprintln!(
            "preencoded-server: paced, {} frames of {} B at {}/s per Subscribe; listening on {}",
            args.paced_count, args.size, args.paced_rate, args.listen
        );
        Source::Paced {
            rate: args.paced_rate,
            count: args.paced_count,
            size: args.size,
        }
    } else {
        let batches = build(&args);
        let bytes: usize = batches.iter().map(Bytes::len).sum();
        eprintln!(
            "preencoded-server: {} batches of {} frames of {} B, {bytes} bytes encoded; listening on {}",
            batches.len(),
            args.frames_per_batch,
            args.size,
            args.listen
        );
        Source::Preencoded(Arc::new(batches))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async {
        // As ringside's server: no Nagle delay on the last partial segment.
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(Svc(source))
            .serve(args.listen)
            .await
    })?;
    Ok(())
}
