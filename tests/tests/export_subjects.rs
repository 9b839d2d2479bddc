//! Subjects and connections: odd topic bytes survive the escaping end to end
//! (real producer, real sidecar, real nats-server, `tail --nats-url`), and
//! the exporter talks to NATS with a token and over TLS.
//!
//! Needs the Debian package `nats-server` (without it a test skips, naming the package, or
//! fails when `RINGSIDE_REQUIRE_TOOLS` is set), and `openssl` for the TLS test's
//! certificates (the same rule).

use ringside_tests::chaos_tls::make_certs;
use ringside_tests::nats::{
    Exporter, NatsServer, export_once, load_sent, rt, server_or_skip, tail, wait_stream,
    wait_stream_ca,
};
use ringside_tests::sidecar::{Sidecar, TempDir, spawn_load};
use ringside_tests::tools::skip_or_fail;
use std::time::Duration;

const STREAM: &str = "TELEMETRY";

fn odd_topics() -> Vec<String> {
    let mut t: Vec<String> = [
        "cpu.user",
        "a b",
        "*",
        ">",
        "a*b>c",
        "_loss",
        "_batch",
        "%41",
        "100%",
        "temp/°C",
        "🦀/rust",
        "tab\there",
        "nl\nx",
        "\u{1}ctl",
        "x.y.z",
        "...",
        "$SYS.x",
        "plain/topic-1_=:+,@~",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    t.push(format!("{}x", "é".repeat(127))); // 255 bytes, every byte escaped but one
    t
}

#[test]
fn odd_topic_bytes_round_trip() {
    let Some(bin) = server_or_skip() else { return };
    let dir = TempDir::new("odd");
    let nats = NatsServer::start(&bin, &dir, &[]);
    let sidecar = Sidecar::start(&dir, &["--ring-size", "1MiB"]);
    let prefix = "tel.odd";
    let topics = odd_topics();
    {
        let p = ringside_client::Producer::connect(&sidecar.socket).expect("producer");
        assert!(
            p.wait_connected(Duration::from_secs(10)),
            "producer not admitted"
        );
        for t in &topics {
            p.send(t, t.as_bytes()).expect("send");
        }
    }
    let mut ex = Exporter::start(
        &dir,
        &sidecar,
        &nats,
        STREAM,
        prefix,
        &["--create-stream", "--quiet"],
    );
    let n = topics.len() as u64;
    let raw = wait_stream(&nats.url(), STREAM, prefix, Duration::from_secs(30), |r| {
        r.frame_count() >= n
    });
    assert_eq!(raw.assert_exactly_once(0, n), 0);
    assert!(ex.stop().success(), "{}", ex.stderr());
    // One token per topic, none reserved, none a wildcard.
    for s in &raw.subjects {
        let token = s.strip_prefix("tel.odd.").expect("under the prefix");
        assert!(!token.contains('.') && !token.is_empty(), "{s:?}");
        assert!(
            !token.starts_with('_'),
            "a topic became a reserved token: {s:?}"
        );
        assert!(token != "*" && token != ">", "{s:?}");
        assert!(token.bytes().all(|b| b.is_ascii_graphic()), "{s:?}");
        assert_eq!(
            ringside_export::subject::escape(
                &ringside_export::subject::unescape(token).expect("unescape")
            ),
            token
        );
    }
    assert_eq!(raw.subjects.len(), topics.len());
    // A plain NATS wildcard over one token sees every frame.
    let wildcard = rt().block_on(async {
        use async_nats::jetstream::{self, consumer::pull};
        use tokio_stream::StreamExt as _;
        let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
        let c = js
            .get_stream(STREAM)
            .await
            .expect("stream")
            .create_consumer(pull::Config {
                filter_subject: "tel.odd.*".into(),
                ..Default::default()
            })
            .await
            .expect("consumer");
        let mut m = c
            .fetch()
            .max_messages(1000)
            .messages()
            .await
            .expect("fetch");
        let mut count = 0;
        while let Some(x) = m.next().await {
            x.expect("message");
            count += 1;
        }
        count
    });
    assert_eq!(
        wildcard,
        topics.len(),
        "`tel.odd.*` must match every frame subject"
    );
    // Back through `tail --nats-url`: the original topics and payloads, in order.
    let url = nats.url();
    let (out, err) = tail(&[
        "--nats-url",
        &url,
        "--stream",
        STREAM,
        "--subject-prefix",
        prefix,
        "--from",
        "earliest",
        "--idle-exit",
        "2s",
        "--json",
    ]);
    let got: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (
                v["topic"].as_str().expect("topic").to_string(),
                v["payload_hex"].as_str().expect("payload").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = topics
        .iter()
        .map(|t| (t.clone(), t.bytes().map(|b| format!("{b:02x}")).collect()))
        .collect();
    assert_eq!(got, want, "{err}");
}

/// A token-protected server: the token file gets in, no token gets a clear error.
#[test]
fn token_authentication() {
    let Some(bin) = server_or_skip() else { return };
    let dir = TempDir::new("token");
    let nats = NatsServer::start(&bin, &dir, &["--auth", "s3cret-token"]);
    let sidecar = Sidecar::start(&dir, &["--ring-size", "1MiB"]);
    let (status, err) = export_once(
        &sidecar,
        &nats.url(),
        STREAM,
        "tel.tok",
        &["--create-stream"],
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("authorization violation") && err.contains("--nats-token-file"),
        "{err}"
    );
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-token\n").expect("token file");
    let t = token.to_str().expect("utf8");
    let mut ex = Exporter::start(
        &dir,
        &sidecar,
        &nats,
        STREAM,
        "tel.tok",
        &["--create-stream", "--quiet", "--nats-token-file", t],
    );
    ex.wait_log("exporting");
    assert!(ex.stop().success(), "{}", ex.stderr());
    let (status, err) = export_once(
        &sidecar,
        &nats.url(),
        STREAM,
        "tel.tok",
        &["--nats-creds", "/nonexistent/x.creds"],
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot read --nats-creds /nonexistent/x.creds"),
        "{err}"
    );
}

/// A TLS-only server: the exporter verifies it with --nats-tls-ca, and `tail`
/// reads back over TLS too; without the CA the error says what to check.
#[test]
fn tls_to_nats() {
    let Some(bin) = server_or_skip() else { return };
    let dir = TempDir::new("tls");
    let certs = match make_certs(dir.path()) {
        Ok(c) => c,
        Err(why) => {
            return skip_or_fail(&format!(
                "cannot make test certificates ({why}): install the `openssl` command"
            ));
        }
    };
    let p = |f: &std::path::Path| f.to_str().expect("utf8").to_string();
    let (cert, key, ca) = (p(&certs.cert), p(&certs.key), p(&certs.ca));
    let nats = NatsServer::start(&bin, &dir, &["--tls", "--tlscert", &cert, "--tlskey", &key]);
    let sidecar = Sidecar::start(&dir, &["--ring-size", "1MiB"]);
    let (status, err) = export_once(
        &sidecar,
        &nats.url(),
        STREAM,
        "tel.tls",
        &["--create-stream"],
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("--nats-tls-ca"), "{err}");
    let mut ex = Exporter::start(
        &dir,
        &sidecar,
        &nats,
        STREAM,
        "tel.tls",
        &["--create-stream", "--quiet", "--nats-tls-ca", &ca],
    );
    ex.wait_log("exporting");
    let sent = load_sent(spawn_load(
        &sidecar.socket,
        &["--rate", "0", "--count", "100", "--size", "64"],
    ));
    let raw = wait_stream_ca(
        &nats.url(),
        Some(&certs.ca),
        STREAM,
        "tel.tls",
        Duration::from_secs(30),
        |r| r.frame_count() >= sent,
    );
    assert_eq!(raw.assert_exactly_once(0, sent), 0);
    assert!(ex.stop().success(), "{}", ex.stderr());
    let url = nats.url();
    let (out, err) = tail(&[
        "--nats-url",
        &url,
        "--nats-tls-ca",
        &ca,
        "--stream",
        STREAM,
        "--subject-prefix",
        "tel.tls",
        "--from",
        "earliest",
        "--idle-exit",
        "2s",
    ]);
    assert_eq!(out.lines().count() as u64, sent, "{err}");
}
