//! The `ringside.v1.Ringside` gRPC service.
//!
//! `Subscribe` is served by [`crate::subscribe`] (hand-encoded, one copy);
//! `Info` and `ListTopics` by the prost-generated server. A small router in
//! front sends each call to the right one, under the one service name.

use crate::state::Shared;
use ringside_proto::v1;
use ringside_proto::v1::ringside_server::{Ringside, RingsideServer};
use ringside_ring::LossReason;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

/// The unary methods.
#[derive(Debug, Clone)]
pub struct UnaryApi {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Ringside for UnaryApi {
    type SubscribeStream = tokio_stream::Empty<Result<v1::Batch, Status>>;

    async fn subscribe(
        &self,
        _req: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::internal(
            "Subscribe is routed to the streaming handler; this is a bug",
        ))
    }

    async fn info(
        &self,
        _req: Request<v1::InfoRequest>,
    ) -> Result<Response<v1::InfoResponse>, Status> {
        Ok(Response::new(info(&self.shared)))
    }

    async fn list_topics(
        &self,
        _req: Request<v1::ListTopicsRequest>,
    ) -> Result<Response<v1::ListTopicsResponse>, Status> {
        let obs = self.shared.observer.snapshot();
        let mut topics: Vec<v1::TopicInfo> = obs
            .topics
            .iter()
            .map(|(name, t)| v1::TopicInfo {
                name: name.to_string(),
                frames: t.frames,
                payload_bytes: t.payload_bytes,
                last_timestamp_ns: t.last_timestamp_ns,
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(v1::ListTopicsResponse {
            topics,
            truncated: obs.topics_truncated,
            frames_seen: obs.frames_seen,
            frames_not_counted: obs.frames_seen.saturating_sub(obs.frames_counted),
        }))
    }
}

/// Builds the Info response.
pub fn info(shared: &Shared) -> v1::InfoResponse {
    let ring = &shared.ring;
    let bounds = ring.bounds();
    let host = shared.host.stats();
    let (fps, bps, retention, span) = shared.observer.with(|o| {
        (
            o.frames_per_sec,
            o.ring_bytes_per_sec,
            o.retention_seconds,
            o.retained_span_seconds,
        )
    });
    let c = &shared.counters;
    v1::InfoResponse {
        version: env!("CARGO_PKG_VERSION").into(),
        ring_id: ring.ring_id(),
        ring_capacity_bytes: ring.capacity(),
        max_payload_bytes: ring.max_payload(),
        ring_adopted: shared.host.adopted(),
        oldest_seq: bounds.oldest.map(|m| m.seq),
        oldest_timestamp_ns: bounds.oldest.map(|m| m.timestamp_ns),
        newest_seq: bounds.newest_seq,
        next_seq: bounds.tail.seq,
        write_position: bounds.tail.pos,
        ingest_frames_per_sec: fps,
        ingest_bytes_per_sec: bps,
        retention_seconds: retention,
        retained_span_seconds: span,
        producers_connected: host.producers_connected,
        producers_admitted: host.producers_admitted,
        producers_refused: host.producers_refused,
        subscribers_active: shared.slots.active() as u64,
        subscribers_max: shared.slots.capacity() as u64,
        subscribers_refused: shared.slots.refused(),
        subscribers_reaped: shared.slots.reaped(),
        frames_out: c.frames_out.load(Ordering::Relaxed),
        bytes_out: c.bytes_out.load(Ordering::Relaxed),
        lost_lapped: c.lost[LossReason::Lapped].load(Ordering::Relaxed),
        lost_abandoned: c.lost[LossReason::Abandoned].load(Ordering::Relaxed),
        lost_corrupt: c.lost[LossReason::Corrupt].load(Ordering::Relaxed),
        memory_budget_bytes: shared.budget_bytes,
        memory_limit_bytes: shared.memory_limit_bytes,
        uptime_seconds: shared.started.elapsed().as_secs_f64(),
        rss_anon_bytes: crate::metrics::rss_anon_bytes().unwrap_or(0),
        subscribers: subscribers(shared),
    }
}

/// Most subscribers listed in one Info response.
pub const MAX_SUBSCRIBERS_LISTED: usize = 64;

/// The active subscribers, largest lag first, at most [`MAX_SUBSCRIBERS_LISTED`].
fn subscribers(shared: &Shared) -> Vec<v1::SubscriberInfo> {
    let mut listed: Vec<v1::SubscriberInfo> = Vec::with_capacity(MAX_SUBSCRIBERS_LISTED + 1);
    for (slot, s) in shared.slots.stats().iter().enumerate() {
        if !s.active.load(Ordering::Relaxed) {
            continue;
        }
        let entry = v1::SubscriberInfo {
            slot: u32::try_from(slot).unwrap_or(u32::MAX),
            lag_bytes: s.lag_bytes.load(Ordering::Relaxed),
            frames_out: s.frames_out.load(Ordering::Relaxed),
        };
        // Keep the list sorted and cut, so it never holds more than the cap + 1.
        let at = listed.partition_point(|e| e.lag_bytes >= entry.lag_bytes);
        if at < MAX_SUBSCRIBERS_LISTED {
            listed.insert(at, entry);
            listed.truncate(MAX_SUBSCRIBERS_LISTED);
        }
    }
    listed
}

type Unary = InterceptedService<RingsideServer<UnaryApi>, crate::auth::TokenCheck>;

/// Routes `Subscribe` to the streaming handler and everything else to the
/// generated server.
#[derive(Clone)]
pub struct RingsideService {
    shared: Arc<Shared>,
    unary: Unary,
}

impl std::fmt::Debug for RingsideService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingsideService").finish_non_exhaustive()
    }
}

impl RingsideService {
    /// Builds the service; unary requests are limited to `max_request` bytes.
    pub fn new(shared: Arc<Shared>) -> Self {
        let server = RingsideServer::new(UnaryApi {
            shared: Arc::clone(&shared),
        })
        .max_decoding_message_size(shared.limits.max_request);
        let unary = InterceptedService::new(server, shared.auth.clone());
        Self { shared, unary }
    }
}

impl tonic::server::NamedService for RingsideService {
    const NAME: &'static str = ringside_proto::SERVICE_NAME;
}

impl tower::Service<http::Request<tonic::body::Body>> for RingsideService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() == ringside_proto::SUBSCRIBE_PATH {
            let shared = Arc::clone(&self.shared);
            Box::pin(async move { Ok(crate::subscribe::handle(shared, req).await) })
        } else {
            let fut = tower::Service::call(&mut self.unary, req);
            Box::pin(async move {
                match fut.await {
                    Ok(r) => Ok(r.map(tonic::body::Body::new)),
                    Err(never) => match never {},
                }
            })
        }
    }
}
