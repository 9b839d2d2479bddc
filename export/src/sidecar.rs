//! The sidecar side: a gRPC client of `ringside serve` (the generated tonic
//! client), with the bearer token to attach to each call.

use ringside_proto::v1;
use ringside_proto::v1::ringside_client::RingsideClient;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// A connected sidecar client. The channel reconnects by itself when the
/// sidecar restarts; the exporter retries its calls with a back-off.
#[derive(Debug, Clone)]
pub struct SidecarClient {
    client: RingsideClient<Channel>,
    authorization: Option<MetadataValue<Ascii>>,
    endpoint: String,
}

impl SidecarClient {
    /// Wraps a connected client; `authorization` is the full header value
    /// (`Bearer <token>`) or `None`.
    pub fn new(
        client: RingsideClient<Channel>,
        authorization: Option<MetadataValue<Ascii>>,
        endpoint: impl Into<String>,
    ) -> SidecarClient {
        SidecarClient {
            client,
            authorization,
            endpoint: endpoint.into(),
        }
    }

    /// Connects to a plain-text endpoint without a token (tests and benchmarks;
    /// `ringside export` connects with the sidecar's own client settings).
    pub async fn connect_plain(endpoint: &str) -> Result<SidecarClient, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(SidecarClient::new(
            RingsideClient::new(channel),
            None,
            endpoint,
        ))
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(t) = &self.authorization {
            req.metadata_mut().insert("authorization", t.clone());
        }
        req
    }

    /// The sidecar's Info.
    pub async fn info(&self) -> Result<v1::InfoResponse, tonic::Status> {
        let mut c = self.client.clone();
        c.info(self.request(v1::InfoRequest {}))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Opens a Subscribe stream. `max_message` bounds one decoded batch.
    pub async fn subscribe(
        &self,
        req: v1::SubscribeRequest,
        max_message: usize,
    ) -> Result<tonic::Streaming<v1::Batch>, tonic::Status> {
        let mut c = self.client.clone().max_decoding_message_size(max_message);
        c.subscribe(self.request(req))
            .await
            .map(tonic::Response::into_inner)
    }
}
