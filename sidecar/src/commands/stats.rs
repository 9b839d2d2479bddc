//! `ringside stats`: the Info call, readable.

use super::client::connect;
use crate::config::{StatsArgs, human_bytes};
use ringside_proto::v1;
use std::process::ExitCode;

/// Runs `ringside stats`.
pub fn run(args: StatsArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringside stats: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let mut conn = match connect(&args.client).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ringside stats: {e}");
                return ExitCode::from(1);
            }
        };
        let req = conn.request(v1::InfoRequest {});
        let info = match conn.client.info(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                eprintln!(
                    "ringside stats: Info failed: {:?}: {}",
                    s.code(),
                    s.message()
                );
                return ExitCode::from(1);
            }
        };
        let topics = if args.topics {
            let req = conn.request(v1::ListTopicsRequest {});
            match conn.client.list_topics(req).await {
                Ok(r) => Some(r.into_inner()),
                Err(s) => {
                    eprintln!(
                        "ringside stats: ListTopics failed: {:?}: {}",
                        s.code(),
                        s.message()
                    );
                    return ExitCode::from(1);
                }
            }
        } else {
            None
        };
        if args.json {
            println!("{}", to_json(&info, topics.as_ref()));
        } else {
            print!("{}", render(&info, &args.client.endpoint));
            if let Some(t) = topics {
                println!(
                    "topics{}:",
                    if t.truncated {
                        " (table full, more exist)"
                    } else {
                        ""
                    }
                );
                for t in t.topics {
                    println!(
                        "  {:<40} {:>12} frames {:>12}",
                        t.name,
                        t.frames,
                        human_bytes(t.payload_bytes)
                    );
                }
            }
        }
        ExitCode::SUCCESS
    })
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The human-readable form.
pub fn render(i: &v1::InfoResponse, endpoint: &str) -> String {
    let retention = if i.retention_seconds > 0.0 {
        humantime::format_duration(std::time::Duration::from_secs(i.retention_seconds as u64))
            .to_string()
    } else {
        "- (no ingest)".into()
    };
    let limit = if i.memory_limit_bytes > 0 {
        human_bytes(i.memory_limit_bytes)
    } else {
        "none".into()
    };
    format!(
        "ringside {ver} at {endpoint} (up {up})
ring        id {id:016x}{adopted}, {cap} data, max payload {maxp}
sequences   oldest {oldest}, newest {newest}, next {next}
ingest      {fps:.0} frames/s, {bps}/s, retention {retention}
producers   {pc} connected, {pa} admitted, {pr} refused
subscribers {sa} of {sm} active, {sr} refused, {sx} reaped
sent        {fo} frames, {bo} payload
lost        {ll} lapped, {la} abandoned, {lc} corrupt
memory      budget {budget}, limit {limit}
",
        ver = i.version,
        up = humantime::format_duration(std::time::Duration::from_secs(i.uptime_seconds as u64)),
        id = i.ring_id,
        adopted = if i.ring_adopted { " (adopted)" } else { "" },
        cap = human_bytes(i.ring_capacity_bytes),
        maxp = human_bytes(u64::from(i.max_payload_bytes)),
        oldest = opt(i.oldest_seq),
        newest = opt(i.newest_seq),
        next = i.next_seq,
        fps = i.ingest_frames_per_sec,
        bps = human_bytes(i.ingest_bytes_per_sec as u64),
        pc = i.producers_connected,
        pa = i.producers_admitted,
        pr = i.producers_refused,
        sa = i.subscribers_active,
        sm = i.subscribers_max,
        sr = i.subscribers_refused,
        sx = i.subscribers_reaped,
        fo = i.frames_out,
        bo = human_bytes(i.bytes_out),
        ll = i.lost_lapped,
        la = i.lost_abandoned,
        lc = i.lost_corrupt,
        budget = human_bytes(i.memory_budget_bytes),
    )
}

fn to_json(i: &v1::InfoResponse, topics: Option<&v1::ListTopicsResponse>) -> String {
    let mut v = serde_json::json!({
        "version": i.version,
        "ring_id": i.ring_id,
        "ring_capacity_bytes": i.ring_capacity_bytes,
        "max_payload_bytes": i.max_payload_bytes,
        "ring_adopted": i.ring_adopted,
        "oldest_seq": i.oldest_seq,
        "oldest_timestamp_ns": i.oldest_timestamp_ns,
        "newest_seq": i.newest_seq,
        "next_seq": i.next_seq,
        "write_position": i.write_position,
        "ingest_frames_per_sec": i.ingest_frames_per_sec,
        "ingest_bytes_per_sec": i.ingest_bytes_per_sec,
        "retention_seconds": i.retention_seconds,
        "producers_connected": i.producers_connected,
        "producers_admitted": i.producers_admitted,
        "producers_refused": i.producers_refused,
        "subscribers_active": i.subscribers_active,
        "subscribers_max": i.subscribers_max,
        "subscribers_refused": i.subscribers_refused,
        "subscribers_reaped": i.subscribers_reaped,
        "frames_out": i.frames_out,
        "bytes_out": i.bytes_out,
        "lost_lapped": i.lost_lapped,
        "lost_abandoned": i.lost_abandoned,
        "lost_corrupt": i.lost_corrupt,
        "memory_budget_bytes": i.memory_budget_bytes,
        "memory_limit_bytes": i.memory_limit_bytes,
        "uptime_seconds": i.uptime_seconds,
    });
    if let Some(t) = topics {
        v["topics"] = t
            .topics
            .iter()
            .map(|t| serde_json::json!({"name": t.name, "frames": t.frames, "payload_bytes": t.payload_bytes}))
            .collect();
        v["topics_truncated"] = t.truncated.into();
    }
    v.to_string()
}
