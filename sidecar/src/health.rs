//! gRPC health checking (`grpc.health.v1.Health`), answered until the process exits.
//!
//! Two names are known: `""` (the server as a whole) and `ringside.v1.Ringside`; both
//! always have the same status. `Check` answers SERVING, or NOT_SERVING from the moment
//! shutdown begins (SIGTERM/SIGINT) until the process exits; an unknown name gets
//! NOT_FOUND. `Watch` sends the current status, then every change; for an unknown name it
//! sends SERVICE_UNKNOWN. When the sidecar is about to exit (after the Subscribe streams
//! ended), every `Watch` stream ends with UNAVAILABLE, so open health streams never hold
//! the exit back.
//!
//! Health calls never need the bearer token (`--auth-token-file`): probes and load
//! balancers carry none.

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// What health says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// SERVING.
    Serving,
    /// NOT_SERVING: shutting down, still answering.
    NotServing,
    /// NOT_SERVING, and Watch streams end: the process is about to exit.
    Closing,
}

/// Changes what health says; the service answers from it.
#[derive(Debug, Clone)]
pub struct HealthReporter {
    tx: std::sync::Arc<watch::Sender<Phase>>,
}

impl HealthReporter {
    /// Health says NOT_SERVING from now on, for both names.
    pub fn not_serving(&self) {
        self.tx.send_if_modified(|p| {
            let changed = *p == Phase::Serving;
            if changed {
                *p = Phase::NotServing;
            }
            changed
        });
    }

    /// Ends every Watch stream (UNAVAILABLE); Check keeps answering NOT_SERVING.
    pub fn close(&self) {
        self.tx.send_replace(Phase::Closing);
    }
}

/// The health service.
#[derive(Debug, Clone)]
pub struct HealthService {
    rx: watch::Receiver<Phase>,
}

/// A new health service (SERVING) and the reporter that changes it.
pub fn health_service() -> (HealthReporter, HealthServer<HealthService>) {
    let (tx, rx) = watch::channel(Phase::Serving);
    (
        HealthReporter {
            tx: std::sync::Arc::new(tx),
        },
        HealthServer::new(HealthService { rx }),
    )
}

/// True for the names this server answers for.
fn known(service: &str) -> bool {
    service.is_empty() || service == ringside_proto::SERVICE_NAME
}

fn status_of(phase: Phase) -> ServingStatus {
    match phase {
        Phase::Serving => ServingStatus::Serving,
        Phase::NotServing | Phase::Closing => ServingStatus::NotServing,
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        if !known(service) {
            return Err(Status::not_found(format!(
                "unknown service {service:?}; this server answers for \"\" and {:?}",
                ringside_proto::SERVICE_NAME
            )));
        }
        Ok(Response::new(response(status_of(*self.rx.borrow()))))
    }

    type WatchStream = HealthWatch;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthWatch>, Status> {
        Ok(Response::new(HealthWatch {
            phases: WatchStream::new(self.rx.clone()),
            known: known(&request.get_ref().service),
            last: None,
            closing: false,
            done: false,
        }))
    }
}

/// The response stream of one `Watch`: one message per status change, bounded by
/// nothing but the status itself (a `watch` channel holds one value).
#[derive(Debug)]
pub struct HealthWatch {
    phases: WatchStream<Phase>,
    known: bool,
    last: Option<ServingStatus>,
    /// The process is about to exit: end after the last status.
    closing: bool,
    done: bool,
}

impl Stream for HealthWatch {
    type Item = Result<HealthCheckResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if this.closing {
                this.done = true;
                return Poll::Ready(Some(Err(Status::unavailable(
                    "ringside is shutting down; the health stream ends (watch again after the restart)",
                ))));
            }
            let phase = match Pin::new(&mut this.phases).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(p)) => p,
                Poll::Ready(None) => Phase::Closing,
            };
            let status = if this.known {
                status_of(phase)
            } else {
                ServingStatus::ServiceUnknown
            };
            // Closing: the last status first (if not sent yet), then the end.
            this.closing = phase == Phase::Closing;
            if this.last != Some(status) {
                this.last = Some(status);
                return Poll::Ready(Some(Ok(response(status))));
            }
        }
    }
}
