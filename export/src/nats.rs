//! Connecting to NATS: URL, TLS, credentials file or token, and the client
//! settings that keep its buffers bounded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::Notify;

/// How to reach and authenticate to NATS.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URL(s), comma-separated (`nats://host:4222`, `tls://host:4222`).
    pub url: String,
    /// NATS credentials file (JWT and NKey seed, `.creds`).
    pub creds_file: Option<PathBuf>,
    /// File whose first line is the token to authenticate with.
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle to verify the server's certificate with (implies TLS).
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (with `tls_client_key`).
    pub tls_client_cert: Option<PathBuf>,
    /// PEM client key.
    pub tls_client_key: Option<PathBuf>,
    /// Refuse a connection that is not TLS.
    pub tls_required: bool,
    /// Give up one connection attempt after this long.
    pub connect_timeout: Duration,
    /// Connection name shown by the server (`nats server report connections`).
    pub name: String,
}

impl NatsOptions {
    /// Options for `url` with no authentication and no TLS.
    pub fn new(url: impl Into<String>) -> NatsOptions {
        NatsOptions {
            url: url.into(),
            creds_file: None,
            token_file: None,
            tls_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
            tls_required: false,
            connect_timeout: Duration::from_secs(5),
            name: "ringside".into(),
        }
    }
}

/// Connecting to NATS failed.
#[derive(Debug, Error)]
pub enum NatsError {
    /// A file named by a flag could not be read.
    #[error("cannot read {what} {path}: {source}")]
    File {
        /// Which flag.
        what: &'static str,
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server refused or could not be reached.
    #[error("cannot connect to NATS at {url}: {reason}. {advice}")]
    Connect {
        /// Where.
        url: String,
        /// What the client said.
        reason: String,
        /// What to check.
        advice: &'static str,
    },
}

/// Client settings that differ between the exporter and the reader.
#[derive(Debug, Clone)]
pub struct ClientTuning {
    /// Commands (publishes, requests) queued inside the client before a send waits.
    pub client_capacity: usize,
    /// Messages a subscription may queue in the client.
    pub subscription_capacity: usize,
    /// Reconnect attempts the client makes by itself after losing the
    /// connection (`None`: forever). The exporter makes one and then rebuilds
    /// the client itself, so that no publish queued in an old client is sent
    /// long after it was given up.
    pub max_reconnects: Option<usize>,
    /// Notified when the client loses its connection.
    pub disconnected: Option<Arc<Notify>>,
}

fn check_file(what: &'static str, p: &Path) -> Result<(), NatsError> {
    std::fs::metadata(p)
        .map(|_| ())
        .map_err(|source| NatsError::File {
            what,
            path: p.display().to_string(),
            source,
        })
}

/// Connects per `opts`.
pub async fn connect(
    opts: &NatsOptions,
    tuning: &ClientTuning,
) -> Result<async_nats::Client, NatsError> {
    let mut o = async_nats::ConnectOptions::new()
        .name(&opts.name)
        .connection_timeout(opts.connect_timeout)
        .client_capacity(tuning.client_capacity.max(1))
        .subscription_capacity(tuning.subscription_capacity.max(1))
        .max_reconnects(tuning.max_reconnects.map(|n| n.max(1)))
        .ping_interval(Duration::from_secs(10))
        .request_timeout(Some(Duration::from_secs(10)));
    if let Some(n) = &tuning.disconnected {
        let n = Arc::clone(n);
        o = o.event_callback(move |event| {
            let n = Arc::clone(&n);
            async move {
                if matches!(
                    event,
                    async_nats::Event::Disconnected | async_nats::Event::Closed
                ) {
                    n.notify_one();
                }
            }
        });
    }
    if let Some(p) = &opts.creds_file {
        check_file("--nats-creds", p)?;
        o = o
            .credentials_file(p)
            .await
            .map_err(|source| NatsError::File {
                what: "--nats-creds",
                path: p.display().to_string(),
                source,
            })?;
    }
    if let Some(p) = &opts.token_file {
        let text = std::fs::read_to_string(p).map_err(|source| NatsError::File {
            what: "--nats-token-file",
            path: p.display().to_string(),
            source,
        })?;
        o = o.token(text.lines().next().unwrap_or("").trim().to_string());
    }
    let mut tls = opts.tls_required || opts.url.split(',').any(|u| u.trim().starts_with("tls://"));
    if let Some(ca) = &opts.tls_ca {
        check_file("--nats-tls-ca", ca)?;
        o = o.add_root_certificates(ca.clone());
        tls = true;
    }
    if let (Some(c), Some(k)) = (&opts.tls_client_cert, &opts.tls_client_key) {
        check_file("--nats-tls-cert", c)?;
        check_file("--nats-tls-key", k)?;
        o = o.add_client_certificate(c.clone(), k.clone());
        tls = true;
    }
    if tls {
        o = o.require_tls(true);
    }
    o.connect(opts.url.as_str()).await.map_err(|e| {
        use async_nats::ConnectErrorKind as K;
        let reason = crate::error_chain(&e);
        let tls_trouble = reason.contains("certificate") || reason.to_ascii_lowercase().contains("tls");
        let advice = match e.kind() {
            _ if tls_trouble => "Check --nats-tls-ca (the CA that signed the server's certificate), --nats-tls-cert and --nats-tls-key.",
            K::AuthorizationViolation | K::Authentication => {
                "Check --nats-creds or --nats-token-file against the server's authorization."
            }
            K::Tls => "Check --nats-tls-ca (the CA that signed the server's certificate), --nats-tls-cert and --nats-tls-key.",
            K::ServerParse | K::Dns => "Write the URL as nats://host:port or tls://host:port.",
            _ => "Is nats-server running there, with JetStream (-js)?",
        };
        NatsError::Connect {
            url: opts.url.clone(),
            reason,
            advice,
        }
    })
}
