//! `ringside serve`: own the ring, admit producers, serve subscribers.

use crate::auth::TokenCheck;
use crate::budget::{Budget, BudgetInputs, MemoryLimit, retention_table};
use crate::config::{ServeArgs, human_bytes};
use crate::limits::{
    LimitedListener, SocketOptions, StallPolicy, SubscriberSlots, UNARY_STREAM_RESERVE,
};
use crate::observer::Observer;
use crate::service::RingsideService;
use crate::state::{CallLimits, Counters, Shared};
use crate::wake::Wake;
use crate::{budget, cgroup};
use ringside_ring::{HostOptions, RingConfig, RingHost};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// How long graceful shutdown waits for Subscribe streams to end before exiting anyway
/// (a stream whose client stopped reading cannot take its last message).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long connections get to close after that (in-flight unary calls, reflection).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why `serve` could not start or stopped.
#[derive(Debug, Error)]
pub enum ServeError {
    /// A flag value is unusable.
    #[error("{0}")]
    Config(String),
    /// The budget does not fit.
    #[error(transparent)]
    OverBudget(#[from] budget::OverBudget),
    /// The ring or producer socket failed.
    #[error("cannot start the ring on {socket}: {source}")]
    Host {
        /// The socket path.
        socket: String,
        /// Why.
        source: ringside_ring::HostError,
    },
    /// Something at run time.
    #[error("{0}")]
    Runtime(String),
}

impl ServeError {
    fn exit_code(&self) -> ExitCode {
        match self {
            ServeError::Config(_) | ServeError::OverBudget(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }
}

/// Geometry and limits resolved from the flags.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The ring.
    pub ring: RingConfig,
    /// Tokio workers.
    pub workers: usize,
    /// Batch cap.
    pub subscriber_buffer: usize,
    /// The budget.
    pub budget: Budget,
    /// The limit it is checked against.
    pub limit: Option<MemoryLimit>,
}

/// Validates the flags and computes the budget.
///
/// # Errors
///
/// [`ServeError`] for flags that cannot work together (ring geometry, a subscriber buffer below
/// one maximum frame, limits), with the flag to change.
pub fn resolve(args: &ServeArgs) -> Result<Resolved, ServeError> {
    let max_payload = u32::try_from(args.max_payload).map_err(|_| {
        ServeError::Config(format!(
            "--max-payload {} is too large; at most 4GiB (and in practice far less than --ring-size)",
            human_bytes(args.max_payload)
        ))
    })?;
    let ring = RingConfig {
        capacity: args.ring_size,
        max_payload,
    };
    ring.validate().map_err(|e| {
        let frame = ringside_ring::frame_len(ringside_ring::MAX_TOPIC_LEN, max_payload as usize) as u64;
        let smallest = (4 * frame).next_power_of_two().max(64 * 1024);
        let largest_payload = (args.ring_size / 4)
            .saturating_sub(ringside_ring::frame_len(ringside_ring::MAX_TOPIC_LEN, 0) as u64);
        ServeError::Config(format!(
            "invalid ring geometry: {e}; with --max-payload {} the ring must be a power of two of at least {} (--ring-size {}), and a ring of {} takes --max-payload {largest_payload} or less",
            human_bytes(args.max_payload),
            human_bytes(smallest),
            flag_bytes(smallest),
            human_bytes(args.ring_size),
        ))
    })?;
    let min_buf =
        crate::batch::min_batch_bytes(ringside_ring::MAX_TOPIC_LEN, max_payload as usize) as u64;
    if args.subscriber_buffer < min_buf {
        return Err(ServeError::Config(format!(
            "--subscriber-buffer {} cannot hold one maximum-size frame; raise it to at least {} or lower --max-payload",
            human_bytes(args.subscriber_buffer),
            human_bytes(min_buf)
        )));
    }
    if args.subscriber_buffer > u64::from(u32::MAX) {
        return Err(ServeError::Config(
            "--subscriber-buffer must be below 4GiB".into(),
        ));
    }
    for (name, v) in [
        ("--max-subscribers", args.max_subscribers),
        ("--max-connections", args.max_connections),
    ] {
        if v == 0 {
            return Err(ServeError::Config(format!("{name} must be at least 1")));
        }
    }
    if args.max_streams_per_connection == 0 {
        return Err(ServeError::Config(
            "--max-streams-per-connection must be at least 1".into(),
        ));
    }
    let workers = match args.worker_threads {
        0 => std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(8),
        n => n,
    };
    let inputs = BudgetInputs {
        ring_bytes: ring.shm_len(),
        max_subscribers: args.max_subscribers as u64,
        max_connections: args.max_connections as u64,
        max_streams_per_connection: u64::from(args.max_streams_per_connection)
            + u64::from(UNARY_STREAM_RESERVE),
        subscriber_buffer: args.subscriber_buffer,
        max_request: args.max_request,
        socket_send_buffer: args.socket_send_buffer,
        worker_threads: workers as u64,
        tls: args.tls_cert.is_some(),
        demo: args.demo,
    };
    let budget = Budget::compute(&inputs);
    let limit = MemoryLimit::effective(args.memory_limit, cgroup::memory_limit());
    Ok(Resolved {
        ring,
        workers,
        subscriber_buffer: args.subscriber_buffer as usize,
        budget,
        limit,
    })
}

/// A byte count as a flag value: `512KiB`, `64MiB`, or plain bytes.
fn flag_bytes(n: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    n.to_string()
}

/// Runs `ringside serve`.
pub fn run(args: ServeArgs) -> ExitCode {
    crate::logging::init(args.log_format);
    let resolved = match resolve(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringside serve: {e}");
            return e.exit_code();
        }
    };
    let table = resolved.budget.table(resolved.limit.as_ref());
    if args.print_budget {
        print!("{table}");
        println!();
        print!("{}", retention_table(resolved.ring.capacity, 16));
        if let Err(e) = resolved.budget.check(resolved.limit.as_ref()) {
            println!();
            println!("note: `serve` would refuse to start with these flags: {e}");
        }
        return ExitCode::SUCCESS;
    }
    let json = args.log_format == crate::config::LogFormat::Json;
    let limit_bytes = resolved.limit.as_ref().map_or(0, |l| l.bytes);
    if let Err(e) = resolved.budget.check(resolved.limit.as_ref()) {
        if json {
            tracing::error!(budget_bytes = resolved.budget.total(), limit_bytes, table = %table, "refusing to start: {e}");
        } else {
            eprint!("{table}");
        }
        eprintln!("ringside serve: refusing to start: {e}");
        return ExitCode::from(2);
    }
    if json {
        tracing::info!(
            budget_bytes = resolved.budget.total(),
            per_subscriber_bytes = resolved.budget.per_subscriber,
            per_connection_bytes = resolved.budget.per_connection,
            limit_bytes,
            table = %table,
            "memory budget"
        );
    } else {
        eprint!("{table}");
    }
    match serve(args, resolved) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("ringside serve: {e}");
            e.exit_code()
        }
    }
}

/// The connection limit after the file descriptor limit, and what refused calls are told.
#[derive(Debug, Clone)]
struct ConnLimit {
    limit: usize,
    refusal: String,
}

/// Raises RLIMIT_NOFILE to the hard limit, logs it, and lowers the connection limit to
/// what the descriptors allow.
fn fd_admission(args: &ServeArgs) -> Result<ConnLimit, ServeError> {
    let nofile = crate::limits::raise_nofile()
        .map_err(|e| ServeError::Runtime(format!("cannot read RLIMIT_NOFILE: {e}")))?;
    let producers = args.max_producers as u64;
    let reserve = crate::limits::fd_reserve(producers);
    let allow = crate::limits::connections_fds_allow(nofile.soft, producers);
    if allow == 0 {
        return Err(ServeError::Config(format!(
            "the file descriptor limit RLIMIT_NOFILE {} (hard {}) leaves none for gRPC connections: {reserve} are kept for --max-producers {} and the sidecar itself, {} for refusal connections; raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) or lower --max-producers",
            nofile.soft,
            nofile.hard,
            args.max_producers,
            crate::limits::OVERFLOW_CONNECTIONS
        )));
    }
    let limit = usize::try_from(allow)
        .unwrap_or(usize::MAX)
        .min(args.max_connections);
    tracing::info!(
        soft = nofile.soft,
        hard = nofile.hard,
        raised_from = nofile.was,
        reserved = reserve,
        connections = limit,
        "RLIMIT_NOFILE {} (raised from {}, hard {}): {reserve} file descriptors kept for producers and the sidecar, room for {allow} gRPC connections (--max-connections {})",
        nofile.soft,
        nofile.was,
        nofile.hard,
        args.max_connections
    );
    if limit < args.max_connections {
        tracing::warn!(
            max_connections = args.max_connections,
            connections = limit,
            nofile = nofile.soft,
            "--max-connections {} is more than RLIMIT_NOFILE {} allows: connections past {limit} are refused with RESOURCE_EXHAUSTED; raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) to serve more",
            args.max_connections,
            nofile.soft
        );
    }
    Ok(ConnLimit {
        limit,
        refusal: crate::limits::connection_refusal(limit, args.max_connections, Some(nofile.soft)),
    })
}

fn serve(args: ServeArgs, r: Resolved) -> Result<(), ServeError> {
    let conn_limit = fd_admission(&args)?;
    let auth = match &args.auth_token_file {
        Some(p) => TokenCheck::from_file(p).map_err(|e| ServeError::Config(e.to_string()))?,
        None => TokenCheck::off(),
    };
    let tls = tls_config(&args)?;
    let host = RingHost::start(HostOptions {
        socket_path: args.socket.clone(),
        ring: r.ring,
        allow_uids: args.allow_uid.clone(),
        allow_gids: args.allow_gid.clone(),
        max_producers: args.max_producers,
        adopt_grace: args.adopt_grace,
        populate_ring: true,
    })
    .map_err(|source| ServeError::Host {
        socket: args.socket.display().to_string(),
        source,
    })?;
    let host = Arc::new(host);
    let ring = host.ring();
    tracing::info!(
        socket = %args.socket.display(),
        ring_id = format_args!("{:016x}", ring.ring_id()),
        capacity = %human_bytes(ring.capacity()),
        max_payload = %human_bytes(u64::from(ring.max_payload())),
        adopted = host.adopted(),
        next_seq = ring.tail().seq,
        "ring ready; producers may connect"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(r.workers)
        .max_blocking_threads(2)
        .thread_name("ringside-worker")
        .enable_all()
        .build()
        .map_err(|e| ServeError::Runtime(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(serve_async(
        args,
        r,
        conn_limit,
        Arc::clone(&host),
        auth,
        tls,
    ));
    host.shutdown();
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

fn tls_config(args: &ServeArgs) -> Result<Option<ServerTlsConfig>, ServeError> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p)
            .map_err(|e| ServeError::Config(format!("cannot read {what} {}: {e}", p.display())))
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
        read(cert, "--tls-cert")?,
        read(key, "--tls-key")?,
    ));
    if let Some(ca) = &args.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca, "--tls-client-ca")?));
    }
    Ok(Some(tls))
}

/// Periodically ends the streams of subscribers that stopped reading, and closes their
/// connections if they still read nothing (see `limits::SubscriberSlots::reap_stalled`).
fn spawn_reaper(shared: Arc<Shared>, policy: StallPolicy) {
    let period = (Duration::from_millis(policy.timeout_ms) / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let reaped = shared.slots.reap_stalled(shared.ring.tail().pos, policy);
            if reaped.ended > 0 {
                metrics::counter!("ringside_subscribers_reaped_total").increment(reaped.ended);
            }
            if reaped.closed > 0 {
                metrics::counter!("ringside_subscriber_connections_closed_total")
                    .increment(reaped.closed);
            }
        }
    });
}

/// The CORS layer for `--cors-allow-origin` (none without origins): preflights are
/// answered here, and grpc-web responses expose the gRPC status headers.
fn cors_layer(origins: &[String]) -> Result<Option<tower_http::cors::CorsLayer>, ServeError> {
    use http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o.trim() == "*") {
        AllowOrigin::any()
    } else {
        let mut list = Vec::with_capacity(origins.len());
        for o in origins {
            let o = o.trim();
            if o.is_empty() || o.ends_with('/') || !o.contains("://") {
                return Err(ServeError::Config(format!(
                    "--cors-allow-origin {o:?} is not an origin; write scheme://host[:port] without a path, e.g. https://console.example.com, or `*`"
                )));
            }
            list.push(
                HeaderValue::from_str(o)
                    .map_err(|e| ServeError::Config(format!("--cors-allow-origin {o:?}: {e}")))?,
            );
        }
        AllowOrigin::list(list)
    };
    let names = |v: &[&'static str]| -> Vec<HeaderName> {
        v.iter().map(|n| HeaderName::from_static(n)).collect()
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::POST, Method::OPTIONS])
            .allow_headers(names(&[
                "content-type",
                "x-grpc-web",
                "x-user-agent",
                "grpc-timeout",
                "authorization",
            ]))
            .expose_headers(names(&[
                "grpc-status",
                "grpc-message",
                "grpc-status-details-bin",
            ]))
            .max_age(Duration::from_secs(24 * 3600)),
    ))
}

/// True when `--max-request` is below the largest Subscribe request the filter rules
/// allow (8 KiB of names and prefixes, 128 entries, the other fields).
fn max_request_too_small(max_request: u64) -> bool {
    let entries = (crate::filter::MAX_FILTER_TOPICS + crate::filter::MAX_FILTER_PREFIXES) as u64;
    // Each entry: a key byte and a length varint of up to 2 bytes; other fields: 40 bytes.
    max_request < crate::filter::MAX_FILTER_BYTES as u64 + entries * 3 + 40
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the sidecar");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

async fn serve_async(
    args: ServeArgs,
    r: Resolved,
    conn_limit: ConnLimit,
    host: Arc<RingHost>,
    auth: TokenCheck,
    tls: Option<ServerTlsConfig>,
) -> Result<(), ServeError> {
    let ring = host.ring();
    let wake = Wake::start(host.waiter(), ring.tail()).map_err(|e| {
        ServeError::Runtime(format!(
            "cannot start the wake task (doorbell eventfd or pending-tick timerfd): {e}"
        ))
    })?;
    let observer = Arc::new(
        Observer::start(Arc::clone(&ring))
            .map_err(|e| ServeError::Runtime(format!("cannot start the observer thread: {e}")))?,
    );
    let shutdown = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared {
        ring: Arc::clone(&ring),
        host: Arc::clone(&host),
        wake_rx: wake.subscribe(),
        waiters: wake.registry(),
        shutdown: Arc::clone(&shutdown),
        slots: SubscriberSlots::new(args.max_subscribers),
        observer: Arc::clone(&observer),
        auth: auth.clone(),
        limits: CallLimits {
            subscriber_buffer: r.subscriber_buffer,
            max_request: args.max_request as usize,
            stall_timeout: args.stall_timeout,
            subscribe_streams_per_connection: args.max_streams_per_connection,
            subscriber_stall_timeout: args.subscriber_stall_timeout,
        },
        counters: Counters::default(),
        budget_bytes: r.budget.total(),
        memory_limit_bytes: r.limit.as_ref().map_or(0, |l| l.bytes),
        chunks: crate::share::ChunkCache::default(),
        started: Instant::now(),
    });

    let std_listener = std::net::TcpListener::bind(args.listen).map_err(|e| {
        ServeError::Config(format!(
            "cannot listen on {}: {e}; is another sidecar running? pick another --listen address",
            args.listen
        ))
    })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| ServeError::Runtime(format!("listener: {e}")))?;
    let listener = tokio::net::TcpListener::from_std(std_listener)
        .map_err(|e| ServeError::Runtime(format!("listener: {e}")))?;
    let listener = LimitedListener::new(
        listener,
        conn_limit.limit,
        SocketOptions {
            send_buffer: args.socket_send_buffer as usize,
            recv_buffer: budget::SOCKET_RECV_BUFFER as usize,
            handshake_timeout: args.handshake_timeout,
        },
        conn_limit.refusal,
    );
    let local = listener
        .local_addr()
        .map_err(|e| ServeError::Runtime(format!("listener: {e}")))?;
    let conn_permits = listener.permits();

    if let Some(addr) = args.metrics_listen.0 {
        crate::metrics::install(addr).map_err(|e| ServeError::Config(e.to_string()))?;
        tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
    }
    crate::metrics::spawn_updater(Arc::clone(&shared), conn_permits, args.max_connections);
    if !args.subscriber_stall_timeout.is_zero() {
        spawn_reaper(
            Arc::clone(&shared),
            StallPolicy::new(args.subscriber_stall_timeout, args.keepalive_interval),
        );
    }

    let (health_reporter, health) = crate::health::health_service();
    let index = crate::reflection::Index::sidecar()
        .map_err(|e| ServeError::Runtime(format!("reflection descriptors: {e}")))?;
    let reflection = crate::reflection::Reflection::new(Arc::new(index));
    let reflection_v1 =
        tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer::new(
            reflection.clone(),
        );
    let reflection_v1alpha =
        tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflectionServer::new(
            reflection,
        );
    let cors = cors_layer(&args.cors_allow_origin)?;
    if max_request_too_small(args.max_request) {
        tracing::warn!(
            max_request = args.max_request,
            "--max-request is below the largest Subscribe request the API allows (8 KiB of topic filters); such requests get RESOURCE_EXHAUSTED"
        );
    }

    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(|e| {
            ServeError::Config(format!(
                "TLS configuration rejected: {e}; check --tls-cert/--tls-key"
            ))
        })?;
    }
    let keepalive = (!args.keepalive_interval.is_zero()).then_some(args.keepalive_interval);
    let mut builder = builder
        .accept_http1(true)
        .tcp_nodelay(true)
        .max_concurrent_streams(
            args.max_streams_per_connection
                .saturating_add(UNARY_STREAM_RESERVE),
        )
        .initial_stream_window_size(budget::h2_stream_window(args.max_request))
        .initial_connection_window_size(budget::H2_CONN_WINDOW)
        .max_frame_size(budget::H2_MAX_FRAME)
        .http2_max_header_list_size(budget::H2_MAX_HEADER_LIST)
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(args.keepalive_timeout))
        .http2_adaptive_window(Some(false))
        .http2_max_pending_accept_reset_streams(Some(32))
        .http2_max_local_error_reset_streams(Some(256));
    if !args.max_connection_age.is_zero() {
        builder = builder
            .max_connection_age(args.max_connection_age)
            .max_connection_age_grace(Duration::from_secs(10));
    }
    let router = builder
        .layer(tower::util::option_layer(cors))
        .layer(crate::console::ConsoleLayer::new(args.console))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(crate::limits::OverLimitLayer)
        .add_service(health)
        .add_service(InterceptedService::new(reflection_v1, auth.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, auth.clone()))
        .add_service(RingsideService::new(Arc::clone(&shared)));

    tracing::info!(
        listen = %local,
        max_subscribers = args.max_subscribers,
        max_connections = args.max_connections,
        auth = auth.enabled(),
        tls = args.tls_cert.is_some(),
        cors = ?args.cors_allow_origin,
        "serving gRPC (ringside.v1.Ringside, health, reflection, grpc-web)"
    );
    if args.console {
        let url = crate::console::url(local, args.tls_cert.is_some());
        tracing::info!(%url, "live console: open {url} in a browser (--console false turns it off)");
    }

    if args.demo {
        crate::commands::demo::spawn(&args, local, Arc::clone(&shared));
    }

    let wake = Arc::new(wake);
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    // Shutdown, in order: health says NOT_SERVING (both names) and keeps answering; every
    // Subscribe stream ends with UNAVAILABLE naming its resume sequence; once they are
    // gone (or after SHUTDOWN_GRACE), health Watch streams end; only then does the
    // server stop accepting and close its connections (CLOSE_GRACE at most).
    let on_signal = {
        let shutdown = Arc::clone(&shutdown);
        let wake = Arc::clone(&wake);
        let shared = Arc::clone(&shared);
        async move {
            let which = shutdown_signal().await;
            tracing::info!(
                signal = which,
                "shutting down: health NOT_SERVING, ending Subscribe streams with UNAVAILABLE"
            );
            health_reporter.not_serving();
            shutdown.store(true, Ordering::Release);
            wake.signal_shutdown();
            let _ = signalled_tx.send(());
            let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
            loop {
                let open = shared.slots.active();
                if open == 0 {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        open,
                        "{open} Subscribe streams did not end within {SHUTDOWN_GRACE:?}: their clients stopped reading and cannot take their last message; exiting anyway"
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            health_reporter.close();
        }
    };
    let serve = router.serve_with_incoming_shutdown(listener.into_stream(), on_signal);
    let grace = async {
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE + CLOSE_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        res = serve => {
            res.map_err(|e| ServeError::Runtime(format!("gRPC server failed: {e}")))?;
        }
        () = grace => {
            tracing::warn!("connections did not close within {CLOSE_GRACE:?} after the Subscribe streams ended (calls still open, e.g. reflection sessions); exiting anyway");
        }
    }
    if let Some(w) = Arc::into_inner(wake) {
        w.join().await;
    }
    if let Some(o) = Arc::into_inner(observer) {
        o.stop();
    }
    tracing::info!("stopped");
    Ok(())
}
