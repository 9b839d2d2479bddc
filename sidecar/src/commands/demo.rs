//! `serve --demo`: an in-process producer and an in-process gRPC subscriber,
//! so the first command shows telemetry flowing end to end.

use super::load::now_ns;
use crate::config::{ServeArgs, human_bytes};
use crate::state::Shared;
use hdrhistogram::Histogram;
use ringside_client::Producer;
use ringside_proto::v1;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPICS: [&str; 3] = ["demo/cpu", "demo/mem", "demo/net"];

/// Starts the demo producer thread and subscriber task.
pub fn spawn(args: &ServeArgs, listen: SocketAddr, shared: Arc<Shared>) {
    let socket = args.socket.clone();
    let rate = args.demo_rate.max(1);
    let spawned = std::thread::Builder::new()
        .name("demo-producer".into())
        .stack_size(256 * 1024)
        .spawn(move || produce(&socket, rate));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "demo producer not started");
        return;
    }
    if args.tls_cert.is_some() {
        println!(
            "demo: producer writing {rate} frames/s; the demo subscriber is off with TLS (use `ringside tail`)"
        );
        return;
    }
    let ip = match listen.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let endpoint = format!("http://{}", SocketAddr::new(ip, listen.port()));
    let client_args = crate::config::ClientArgs {
        endpoint: endpoint.clone(),
        auth_token_file: args.auth_token_file.clone(),
        tls_ca: None,
        tls_client_cert: None,
        tls_client_key: None,
        connect_timeout: Duration::from_secs(5),
    };
    println!(
        "demo: a producer writes {rate} frames/s to {}; a subscriber reads them back over gRPC at {endpoint}.\n\
         demo: in another terminal try `ringside tail --from earliest` or `ringside stats`; Ctrl-C stops.",
        TOPICS.join(", ")
    );
    if args.console {
        println!(
            "demo: live console: open {} in a browser",
            crate::console::url(listen, false)
        );
    }
    tokio::spawn(async move {
        if let Err(e) = subscribe(client_args, shared).await {
            println!("demo: subscriber stopped: {e}");
        }
    });
}

fn produce(socket: &std::path::Path, rate: u64) {
    let p = match Producer::connect(socket) {
        Ok(p) => p,
        Err(e) => {
            println!("demo: producer cannot connect to {}: {e}", socket.display());
            return;
        }
    };
    let start = Instant::now();
    let mut sent = 0u64;
    let mut payload = String::with_capacity(96);
    loop {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64 + 1;
        while sent < due {
            let topic = TOPICS[(sent % 3) as usize];
            let x = (sent as f64 / 500.0).sin();
            payload.clear();
            use std::fmt::Write as _;
            let _ = match topic {
                "demo/cpu" => write!(
                    payload,
                    "{{\"sent_ns\":{},\"cpu_pct\":{:.1}}}",
                    now_ns(),
                    50.0 + 40.0 * x
                ),
                "demo/mem" => write!(
                    payload,
                    "{{\"sent_ns\":{},\"rss_mib\":{:.0}}}",
                    now_ns(),
                    512.0 + 64.0 * x
                ),
                _ => write!(
                    payload,
                    "{{\"sent_ns\":{},\"rx_kbps\":{:.0}}}",
                    now_ns(),
                    900.0 + 300.0 * x
                ),
            };
            let _ = p.send(topic, payload.as_bytes());
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn sent_ns(payload: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(payload).ok()?;
    let rest = s.strip_prefix("{\"sent_ns\":")?;
    let end = rest.find(',')?;
    rest[..end].parse().ok()
}

async fn subscribe(args: crate::config::ClientArgs, shared: Arc<Shared>) -> Result<(), String> {
    let mut conn = super::client::connect(&args)
        .await
        .map_err(|e| e.to_string())?;
    let req = conn.request(v1::SubscribeRequest {
        start: Some(v1::subscribe_request::Start::Latest(true)),
        topic_prefixes: vec!["demo/".into()],
        ..Default::default()
    });
    let mut stream = conn
        .client
        .subscribe(req)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 2).map_err(|e| e.to_string())?;
    let (mut frames, mut lost) = (0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = Instant::now();
    loop {
        tokio::select! {
            msg = stream.message() => {
                let batch = match msg {
                    Ok(Some(b)) => b,
                    Ok(None) => return Ok(()),
                    Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
                };
                lost += batch.losses.iter().map(|l| l.frames).sum::<u64>();
                let now = now_ns();
                for f in &batch.frames {
                    frames += 1;
                    if let Some(t) = sent_ns(&f.payload) {
                        let _ = hist.record(now.saturating_sub(t).max(1));
                    }
                }
            }
            _ = tick.tick() => {
                let dt = last.elapsed().as_secs_f64();
                last = Instant::now();
                let (retention, subs) = (
                    shared.observer.with(|o| o.retention_seconds),
                    shared.slots.active(),
                );
                let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
                println!(
                    "demo: {:>6.0} frames/s received, {lost} lost, latency p50 {:.0}µs p99 {:.0}µs max {:.0}µs | ring {}, retention {}, {subs} subscriber(s)",
                    frames as f64 / dt,
                    us(0.5),
                    us(0.99),
                    hist.max() as f64 / 1000.0,
                    human_bytes(shared.ring.capacity()),
                    if retention > 0.0 { format!("{retention:.0}s") } else { "-".into() },
                );
                frames = 0;
                lost = 0;
                hist.reset();
            }
        }
    }
}
