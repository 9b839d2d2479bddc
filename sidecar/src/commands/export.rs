//! `ringside export`: flags → `ringside_export::ExportConfig`, the memory
//! budget (with this binary's cgroup detection), then the exporter itself
//! (the `ringside-export` crate) on a runtime of `--worker-threads`.

use super::client::connect;
use crate::config::{ExportArgs, NatsArgs};
use ringside_export::nats::NatsOptions;
use ringside_export::stream::CreateLimits;
use ringside_export::subject::Subjects;
use ringside_export::{Budget, ExportConfig, MemoryLimit, SidecarClient};
use std::process::ExitCode;

/// The HTTP/2 stream window `commands::client::connect` asks for (bytes the
/// exporter's sidecar connection may buffer unread), for the budget.
const SIDECAR_STREAM_WINDOW: u64 = 4 << 20;

/// NATS options from the flags (`tail --nats-url` uses them too).
pub fn nats_options(n: &NatsArgs, url: &str) -> NatsOptions {
    let mut o = NatsOptions::new(url);
    o.creds_file.clone_from(&n.nats_creds);
    o.token_file.clone_from(&n.nats_token_file);
    o.tls_ca.clone_from(&n.nats_tls_ca);
    o.tls_client_cert.clone_from(&n.nats_tls_cert);
    o.tls_client_key.clone_from(&n.nats_tls_key);
    o.tls_required = n.nats_tls;
    o
}

/// The stream name and subjects from the flags.
///
/// # Errors
///
/// A text naming the flag that is missing (`--stream`, `--subject-prefix`) or invalid.
pub fn stream_and_subjects(n: &NatsArgs) -> Result<(String, Subjects), String> {
    let (Some(stream), Some(prefix)) = (&n.stream, &n.subject_prefix) else {
        return Err("--stream and --subject-prefix are required with --nats-url".into());
    };
    Ok((
        stream.clone(),
        Subjects::new(prefix).map_err(|e| e.to_string())?,
    ))
}

fn config(args: &ExportArgs) -> Result<ExportConfig, String> {
    let Some(url) = &args.nats.url else {
        return Err("--nats-url is required (e.g. nats://127.0.0.1:4222)".into());
    };
    let (stream, subjects) = stream_and_subjects(&args.nats)?;
    let mut cfg = ExportConfig::new(nats_options(&args.nats, url), stream, subjects);
    cfg.from = super::tail::parse_from(&args.from)?;
    cfg.batch = args.batch;
    cfg.read_batch_bytes = u32::try_from(args.read_batch)
        .ok()
        .filter(|b| *b >= 4096)
        .ok_or_else(|| {
            format!(
                "--read-batch {} must be between 4KiB and 4GiB",
                args.read_batch
            )
        })?;
    if args.max_inflight == 0 {
        return Err("--max-inflight must be at least 1".into());
    }
    cfg.max_inflight_messages = args.max_inflight;
    cfg.max_inflight_bytes = args.max_inflight_bytes;
    cfg.ack_timeout = args.ack_timeout;
    cfg.create_stream = args.create_stream.then(|| CreateLimits {
        max_bytes: (args.stream_max_bytes > 0).then_some(args.stream_max_bytes),
        max_age: (!args.stream_max_age.is_zero()).then_some(args.stream_max_age),
        duplicate_window: args.stream_duplicate_window,
        replicas: args.stream_replicas,
        memory: args.stream_memory,
    });
    cfg.min_stream_bytes = args.min_stream_bytes;
    cfg.metrics_listen = args.metrics_listen.0;
    cfg.progress_interval = (!args.quiet).then_some(std::time::Duration::from_secs(1));
    cfg.drain_timeout = args.drain_timeout;
    cfg.takeover_wait = args.takeover_wait;
    cfg.grpc_receive_window = SIDECAR_STREAM_WINDOW;
    cfg.worker_threads = args.worker_threads.max(1);
    cfg.memory_limit =
        crate::budget::MemoryLimit::effective(args.memory_limit, crate::cgroup::memory_limit())
            .map(|l| MemoryLimit {
                bytes: l.bytes,
                source: l.source,
            });
    Ok(cfg)
}

/// Runs `ringside export`.
pub fn run(args: ExportArgs) -> ExitCode {
    crate::logging::init(args.log_format);
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringside export: {e}");
            return ExitCode::from(2);
        }
    };
    let budget = Budget::compute(&cfg);
    let table = budget.table(cfg.memory_limit.as_ref());
    let over = budget.check(cfg.memory_limit.as_ref());
    if args.print_budget {
        print!("{table}");
        if let Err(e) = over {
            println!("\nnote: `export` would refuse to start with these flags: {e}");
        }
        return ExitCode::SUCCESS;
    }
    eprint!("{table}");
    if let Err(e) = over {
        eprintln!("ringside export: refusing to start: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads)
        .max_blocking_threads(2)
        .thread_name("ringside-export")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringside export: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let conn = match connect(&args.client).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ringside export: {e}");
                return ExitCode::from(1);
            }
        };
        let sidecar = SidecarClient::new(
            conn.client.clone(),
            conn.authorization(),
            args.client.endpoint.clone(),
        );
        match ringside_export::export(cfg, sidecar, ringside_export::shutdown_signal()).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringside export: {e}");
                ExitCode::from(e.exit_code())
            }
        }
    })
}
