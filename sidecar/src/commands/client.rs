//! Connecting the gRPC client commands (`tail`, `stats`, the demo subscriber).

use crate::config::ClientArgs;
use ringside_proto::v1::ringside_client::RingsideClient;
use thiserror::Error;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Connecting failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The endpoint string is unusable.
    #[error("invalid --endpoint `{endpoint}`: {reason}; write e.g. http://127.0.0.1:50051")]
    Endpoint {
        /// What was given.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// TLS settings were rejected (bad certificate or key).
    #[error(
        "TLS setup for {endpoint} failed: {reason}; check --tls-ca, --tls-client-cert and --tls-client-key (X.509 v3 PEM)"
    )]
    Tls {
        /// Where.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    File {
        /// Which flag.
        what: &'static str,
        /// Path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The sidecar is not reachable.
    #[error("cannot connect to {endpoint}: {reason}; is `ringside serve` running there?")]
    Connect {
        /// Where.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

/// A connected client plus the token to attach to each request.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The generated client.
    pub client: RingsideClient<Channel>,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Connected {
    /// Wraps a message in a request carrying the bearer token, if any.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            req.metadata_mut().insert("authorization", t.clone());
        }
        req
    }
}

fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::File {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// Connects per the flags.
///
/// # Errors
///
/// [`ClientError`] for a bad endpoint, unreadable TLS or token files, or a server that cannot
/// be reached within the connect timeout.
pub async fn connect(args: &ClientArgs) -> Result<Connected, ClientError> {
    let bad = |reason: String| ClientError::Endpoint {
        endpoint: args.endpoint.clone(),
        reason,
    };
    let mut ep = Endpoint::from_shared(args.endpoint.clone())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(args.connect_timeout)
        .tcp_nodelay(true)
        // Room for a few full batches in flight: fewer WINDOW_UPDATE round trips.
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20));
    if args.endpoint.starts_with("https://") || args.tls_ca.is_some() {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &args.tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?));
        } else {
            return Err(bad(
                "https endpoints need --tls-ca (the CA that signed the sidecar's certificate)"
                    .into(),
            ));
        }
        if let (Some(c), Some(k)) = (&args.tls_client_cert, &args.tls_client_key) {
            tls = tls.identity(Identity::from_pem(
                read("--tls-client-cert", c)?,
                read("--tls-client-key", k)?,
            ));
        }
        ep = ep.tls_config(tls).map_err(|e| ClientError::Tls {
            endpoint: args.endpoint.clone(),
            reason: error_chain(&e),
        })?;
    }
    let token = match &args.auth_token_file {
        Some(p) => {
            let text = String::from_utf8_lossy(&read("--auth-token-file", p)?).into_owned();
            let t = text.lines().next().unwrap_or("").trim().to_string();
            Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| bad("the token has characters not allowed in a header".into()))?,
            )
        }
        None => None,
    };
    let channel = ep.connect().await.map_err(|e| ClientError::Connect {
        endpoint: args.endpoint.clone(),
        reason: error_chain(&e),
    })?;
    let client = RingsideClient::new(channel).max_decoding_message_size(64 << 20);
    Ok(Connected { client, token })
}

/// The error and its sources, joined.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
