//! The commands around the service, run as real processes: `serve --demo`,
//! `tail --json`, `stats`, metrics, and TLS/mTLS.

use ringside_tests::sidecar as harness;

use harness::*;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ringside(args: &[&str]) -> std::process::Output {
    Command::new(ringside_bin())
        .args(args)
        .output()
        .expect("run ringside")
}

#[test]
fn serve_demo_shows_frames_flowing() {
    let dir = TempDir::new("demo");
    let port = free_port().to_string();
    let socket = dir.join("s.sock");
    let mut child = Command::new(ringside_bin())
        .args(["serve", "--demo", "--adopt-grace", "100ms", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve --demo");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = None;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if line.contains("frames/s received") {
            let n: f64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            if n > 0.0 {
                seen = Some(line);
                break;
            }
        }
    }
    signal(&child, libc::SIGTERM);
    let status = child.wait().expect("wait");
    let line = seen.expect("a demo summary line with frames received");
    assert!(line.contains("latency p50"), "{line}");
    assert!(
        status.success(),
        "serve --demo exits cleanly on SIGTERM: {status}"
    );
}

#[test]
fn tail_json_stats_and_metrics() {
    let dir = TempDir::new("cli");
    let mport = free_port().to_string();
    let metrics = format!("127.0.0.1:{mport}");
    let sidecar = Sidecar::start(&dir, &["--metrics-listen", &metrics]);
    let sock = sidecar.socket.to_str().expect("utf8").to_string();
    run_load(
        &sidecar.socket,
        &[
            "--rate", "0", "--count", "20", "--size", "4", "--topics", "2",
        ],
    );
    let ep = sidecar.endpoint();

    let out = ringside(&[
        "tail",
        "--endpoint",
        &ep,
        "--from",
        "earliest",
        "--json",
        "--count",
        "5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 5);
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["seq"].as_u64(), Some(i as u64), "{v}");
        assert!(v["ts_ns"].as_u64().is_some_and(|t| t > 0), "{v}");
        assert!(
            v["topic"].as_str().is_some_and(|t| t.starts_with("load/")),
            "{v}"
        );
        assert!(v["producer_id"].as_u64().is_some(), "{v}");
        assert_eq!(v["payload_len"].as_u64(), Some(4), "{v}");
        assert_eq!(v["payload_hex"].as_str().map(str::len), Some(8), "{v}");
    }

    let out = ringside(&[
        "tail",
        "--endpoint",
        &ep,
        "--from",
        "15",
        "--topic",
        "load/1",
        "--json",
        "--idle-exit",
        "500ms",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let seqs: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["seq"]
                .as_u64()
                .expect("seq")
        })
        .collect();
    assert!(
        !seqs.is_empty() && seqs.iter().all(|s| *s >= 15),
        "{seqs:?}"
    );

    let out = ringside(&["stats", "--endpoint", &ep, "--topics"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ring") && text.contains("subscribers") && text.contains("memory"),
        "{text}"
    );
    let out = ringside(&["stats", "--endpoint", &ep, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats --json");
    assert_eq!(v["next_seq"].as_u64(), Some(20));

    // Prometheus exposition.
    let mut s = std::net::TcpStream::connect(&metrics).expect("metrics port");
    use std::io::Write;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    for name in [
        "ringside_frames_out_total",
        "ringside_memory_budget_bytes",
        "ringside_rss_anon_bytes",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
    let _ = sock;
}

fn openssl(args: &[&str], dir: &TempDir) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn mutual_tls() {
    let dir = TempDir::new("tls");
    std::fs::write(
        dir.join("srv.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext");
    std::fs::write(
        dir.join("cli.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .expect("ext");
    let ok = openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=ringside-test-ca",
        ],
        &dir,
    ) && openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=localhost",
        ],
        &dir,
    ) && openssl(
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "srv.ext",
        ],
        &dir,
    ) && openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "cli.key",
            "-out",
            "cli.csr",
            "-subj",
            "/CN=client",
        ],
        &dir,
    ) && openssl(
        &[
            "x509",
            "-req",
            "-in",
            "cli.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cli.pem",
            "-days",
            "2",
            "-extfile",
            "cli.ext",
        ],
        &dir,
    );
    if !ok {
        println!("SKIP mutual_tls: the openssl command is not available to make test certificates");
        return;
    }
    let p = |f: &str| dir.join(f).to_str().expect("utf8").to_string();
    let sidecar = Sidecar::start(
        &dir,
        &[
            "--tls-cert",
            &p("srv.pem"),
            "--tls-key",
            &p("srv.key"),
            "--tls-client-ca",
            &p("ca.pem"),
        ],
    );
    let ep = format!("https://localhost:{}", sidecar.addr.port());
    let out = ringside(&[
        "stats",
        "--endpoint",
        &ep,
        "--tls-ca",
        &p("ca.pem"),
        "--tls-client-cert",
        &p("cli.pem"),
        "--tls-client-key",
        &p("cli.key"),
    ]);
    assert!(
        out.status.success(),
        "mTLS stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ringside(&["stats", "--endpoint", &ep, "--tls-ca", &p("ca.pem")]);
    assert!(
        !out.status.success(),
        "no client certificate must be refused"
    );
    let out = ringside(&[
        "stats",
        "--endpoint",
        &format!("http://127.0.0.1:{}", sidecar.addr.port()),
    ]);
    assert!(!out.status.success(), "plaintext must be refused");
}
