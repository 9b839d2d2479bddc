//! One exporter per prefix, and nothing of the previous one still on its way
//! when the next one reads where to resume.
//!
//! Every exporter connection subscribes to `_RINGSIDE.EXPORTER.<prefix>` (a
//! core NATS subject outside any stream) and answers requests there with who
//! it is. Before an exporter reads the stream's state at start, it asks that
//! subject until nobody listens: NATS answers "no responders" only once the
//! server has removed the subscriptions of every earlier connection, which it
//! does when it tears the connection down, after it has read what that
//! connection had sent. A killed exporter's records that were still in the
//! server's socket buffer are therefore stored (or dropped with the
//! connection) before its successor reads the last record and resumes after
//! it. Without this, the successor could resume from a record that was no
//! longer the last one, and publish again, with other batch boundaries and so
//! other message ids, frames the stream was about to receive.
//!
//! A live exporter on the prefix answers; the newcomer waits for it to go
//! (`--takeover-wait`), then refuses to start, naming it. A connection the
//! server still holds but nobody answers on (an exporter that died without
//! its host closing the socket) is waited for the same way, until the server
//! drops it after its ping timeout.

use async_nats::{Client, RequestErrorKind};
use bytes::Bytes;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;

/// The subject exporters of `prefix` listen on.
pub fn subject(prefix: &str) -> String {
    format!("_RINGSIDE.EXPORTER.{prefix}")
}

/// How long one request waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Pause between requests while the prefix is taken.
const PROBE_PAUSE: Duration = Duration::from_millis(250);

/// This process, as it answers on the presence subject.
fn identity(client: &Client) -> Bytes {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Bytes::from(
        serde_json::json!({
            "exporter": "ringside export",
            "host": host,
            "pid": std::process::id(),
            "nats_client_id": client.server_info().client_id,
            "since_unix": started,
        })
        .to_string(),
    )
}

/// The subscription that answers for this exporter; dropped with its connection.
#[derive(Debug)]
pub(crate) struct Presence {
    task: JoinHandle<()>,
}

impl Presence {
    /// Subscribes to the prefix's subject on `client` and answers every request there.
    pub async fn announce(client: &Client, prefix: &str) -> Result<Presence, String> {
        let subject = subject(prefix);
        let mut sub = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| format!("cannot subscribe to {subject}: {e}"))?;
        let me = identity(client);
        let c = client.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let _ = c.publish(reply, me.clone()).await;
                }
            }
        });
        Ok(Presence { task })
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Who holds the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Nobody: no subscription on the subject.
    Nobody,
    /// A running exporter answered (what it said).
    Exporter(String),
    /// A subscription exists but nobody answered within a second: a connection the
    /// server has not torn down yet (an exporter just killed, or one that died without
    /// its socket being closed), or an exporter too busy to answer.
    Silent,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Nobody => write!(f, "nobody"),
            Holder::Exporter(who) => write!(f, "by a running exporter: {who}"),
            Holder::Silent => write!(
                f,
                "by a connection that does not answer (an exporter that just died, whose records the server may still be reading)"
            ),
        }
    }
}

/// Asks once who holds `prefix`.
///
/// # Errors
///
/// The request could not be sent (the connection is gone).
pub async fn probe(client: &Client, prefix: &str) -> Result<Holder, String> {
    let req = async_nats::Request::new()
        .payload(Bytes::new())
        .timeout(Some(PROBE_TIMEOUT));
    match client.send_request(subject(prefix), req).await {
        Ok(m) => Ok(Holder::Exporter(
            String::from_utf8_lossy(&m.payload).into_owned(),
        )),
        Err(e) => match e.kind() {
            RequestErrorKind::NoResponders => Ok(Holder::Nobody),
            RequestErrorKind::TimedOut => Ok(Holder::Silent),
            RequestErrorKind::Other => Err(format!(
                "asking who exports under the prefix failed: {}",
                crate::error_chain(&e)
            )),
        },
    }
}

/// The prefix stayed taken for `waited`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}",
    match holder {
        Holder::Exporter(who) => format!(
            "another `ringside export` is publishing under --subject-prefix {prefix} (it answers on {subject}: {who}); still there after --takeover-wait {}. Stop it, or give this exporter its own prefix",
            humantime::format_duration(*waited),
            subject = subject(prefix),
        ),
        _ => format!(
            "a NATS connection that subscribed to {subject} is still open after --takeover-wait {} and does not answer: an earlier exporter of --subject-prefix {prefix} that died without its socket being closed (the server drops such a connection after its ping timeout, a few minutes), or one too busy to answer. Starting now could resume before records it sent are stored; retry later or raise --takeover-wait. (Is this NATS user allowed to publish and subscribe on _RINGSIDE.EXPORTER.>?)",
            humantime::format_duration(*waited),
            subject = subject(prefix),
        ),
    }
)]
pub struct PrefixTaken {
    /// The prefix.
    pub prefix: String,
    /// Who held it at the last attempt.
    pub holder: Holder,
    /// How long the exporter waited.
    pub waited: Duration,
}

/// Waits until nobody holds `prefix`, asking every 250 ms for at most `wait`.
/// `on_wait` is called once, with the holder, when the first answer is not
/// [`Holder::Nobody`].
///
/// # Errors
///
/// [`PrefixTaken`] when it is still held after `wait`; the text of a failed request.
pub async fn wait_until_free(
    client: &Client,
    prefix: &str,
    wait: Duration,
    mut on_wait: impl FnMut(&Holder),
) -> Result<(), WaitError> {
    let started = Instant::now();
    let mut told = false;
    loop {
        let holder = probe(client, prefix).await.map_err(WaitError::Request)?;
        if holder == Holder::Nobody {
            return Ok(());
        }
        if !told {
            on_wait(&holder);
            told = true;
        }
        if started.elapsed() >= wait {
            return Err(WaitError::Taken(PrefixTaken {
                prefix: prefix.to_string(),
                holder,
                waited: started.elapsed(),
            }));
        }
        tokio::time::sleep(PROBE_PAUSE).await;
    }
}

/// Why [`wait_until_free`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// Still taken.
    #[error(transparent)]
    Taken(#[from] PrefixTaken),
    /// A request failed.
    #[error("{0}")]
    Request(String),
}
