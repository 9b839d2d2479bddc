//! `naive-server`: the baseline telemetry server, written the way a competent
//! engineer in a hurry would. Producers push frames over a gRPC client stream;
//! the server keeps the last `--history` frames in a `VecDeque` and fans every
//! frame out to each subscriber through an unbounded tokio channel; each
//! subscriber's task re-encodes its own copy of the frames.
//!
//! Nothing here bounds memory: a subscriber that reads slowly, or not at all,
//! makes its channel grow for as long as producers write.

use clap::Parser;
use ringside_naive::v1::naive_server::{Naive, NaiveServer};
use ringside_naive::v1::{Batch, Frame, PublishReply, SubscribeRequest};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Naive baseline telemetry server (unbounded per-subscriber queues)")]
struct Args {
    /// gRPC address.
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: SocketAddr,
    /// Frames of history kept for new subscribers.
    #[arg(long, default_value_t = 1_000_000)]
    history: usize,
    /// Largest number of frames per outgoing batch.
    #[arg(long, default_value_t = 256)]
    batch_frames: usize,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    history: VecDeque<Frame>,
    subscribers: Vec<mpsc::UnboundedSender<Frame>>,
}

struct Server {
    state: Mutex<State>,
    history: usize,
    batch_frames: usize,
}

type BatchStream = Pin<Box<dyn Stream<Item = Result<Batch, Status>> + Send>>;

#[tonic::async_trait]
impl Naive for Server {
    async fn publish(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<PublishReply>, Status> {
        let mut frames = request.into_inner();
        let mut accepted = 0u64;
        while let Some(frame) = frames.message().await? {
            let mut st = self
                .state
                .lock()
                .map_err(|_| Status::internal("poisoned"))?;
            let mut frame = frame;
            frame.seq = st.next_seq;
            st.next_seq += 1;
            // Fan out: every subscriber gets its own copy.
            st.subscribers.retain(|tx| tx.send(frame.clone()).is_ok());
            st.history.push_back(frame);
            while st.history.len() > self.history {
                st.history.pop_front();
            }
            accepted += 1;
        }
        Ok(Response::new(PublishReply { accepted }))
    }

    type SubscribeStream = BatchStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
        {
            let mut st = self
                .state
                .lock()
                .map_err(|_| Status::internal("poisoned"))?;
            if request.get_ref().from_history {
                for f in &st.history {
                    let _ = tx.send(f.clone());
                }
            }
            st.subscribers.push(tx);
        }
        let max = self.batch_frames.max(1);
        let (out_tx, out_rx) = mpsc::channel::<Result<Batch, Status>>(16);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut frames = vec![first];
                while frames.len() < max {
                    match rx.try_recv() {
                        Ok(f) => frames.push(f),
                        Err(_) => break,
                    }
                }
                let resume_seq = frames.last().map(|f| f.seq + 1).unwrap_or(0);
                let batch = Batch {
                    ring_id: 0,
                    frames,
                    losses: Vec::new(),
                    resume_seq,
                };
                if out_tx.send(Ok(batch)).await.is_err() {
                    break;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(out_rx).map(|b| b);
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let server = Server {
        state: Mutex::new(State::default()),
        history: args.history,
        batch_frames: args.batch_frames,
    };
    eprintln!("naive-server listening on {}", args.listen);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    tonic::transport::Server::builder()
        .add_service(NaiveServer::new(server))
        .serve_with_shutdown(args.listen, shutdown)
        .await?;
    Ok(())
}
