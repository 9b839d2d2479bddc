//! `naive-load`: pushes frames to `naive-server` over `Publish` client streams
//! as fast as HTTP/2 flow control allows, one connection per producer. Prints
//! one JSON object with the totals (`sent`, `sent_bytes`, `accepted`,
//! `elapsed_s`, `error`).

use clap::Parser;
use ringside_naive::now_ns;
use ringside_naive::v1::Frame;
use ringside_naive::v1::naive_client::NaiveClient;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Push frames to naive-server as fast as possible")]
struct Args {
    /// gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50061")]
    endpoint: String,
    /// Payload bytes per frame.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Frames in total over all producers.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Producers (one connection and client stream each).
    #[arg(long, default_value_t = 1)]
    producers: u64,
    /// Number of topics (`load/0` ... `load/K-1`), round-robin.
    #[arg(long, default_value_t = 4)]
    topics: u64,
    /// Frames per second over all producers (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    let per = args.count / args.producers.max(1);
    for p in 0..args.producers.max(1) {
        let n = if p == 0 {
            args.count - per * (args.producers.max(1) - 1)
        } else {
            per
        };
        let endpoint = args.endpoint.clone();
        let sent = Arc::clone(&sent);
        let size = args.size;
        let topics = args.topics.max(1);
        let rate = args.rate / args.producers.max(1);
        tasks.push(tokio::spawn(async move {
            let mut client = NaiveClient::connect(endpoint)
                .await
                .map_err(|e| e.to_string())?;
            let frame = move |i: u64| {
                let mut payload = vec![0xA5u8; size];
                let now = now_ns();
                if size >= 16 {
                    payload[..8].copy_from_slice(&i.to_le_bytes());
                    payload[8..16].copy_from_slice(&now.to_le_bytes());
                }
                Frame {
                    seq: 0,
                    timestamp_ns: now,
                    topic: format!("load/{}", i % topics),
                    producer_id: p as u32,
                    payload,
                }
            };
            let reply = if rate == 0 {
                let frames = tokio_stream::iter((0..n).map(move |i| {
                    sent.fetch_add(1, Ordering::Relaxed);
                    frame(i)
                }));
                client.publish(frames).await
            } else {
                // Paced like `ringside load`: a thread writes what is due and
                // sleeps 200 us when ahead.
                let (tx, rx) = tokio::sync::mpsc::channel(4096);
                std::thread::spawn(move || {
                    let start = Instant::now();
                    let mut i = 0u64;
                    while i < n {
                        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64 + 1;
                        if i >= due {
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            continue;
                        }
                        while i < due.min(n) {
                            if tx.blocking_send(frame(i)).is_err() {
                                return;
                            }
                            sent.fetch_add(1, Ordering::Relaxed);
                            i += 1;
                        }
                    }
                });
                client
                    .publish(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
            };
            reply
                .map(|r| r.into_inner().accepted)
                .map_err(|e| e.to_string())
        }));
    }
    let mut accepted = 0u64;
    let mut error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(a)) => accepted += a,
            Ok(Err(e)) => error = Some(e),
            Err(e) => error = Some(e.to_string()),
        }
    }
    let sent = sent.load(Ordering::Relaxed);
    let out = serde_json::json!({
        "sent": sent,
        "sent_bytes": sent * args.size as u64,
        "accepted": accepted,
        "elapsed_s": start.elapsed().as_secs_f64(),
        "error": error,
    });
    println!("{out}");
}
