//! The physical limits measured in the same run: raw loopback TCP and memcpy bandwidth.

use crate::*;

/// Physical limits measured in the same run.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    pub(crate) tcp_gib_s: f64,
    pub(crate) memcpy_gib_s: f64,
    pub(crate) bytes: u64,
}

/// Raw loopback TCP (one connection, 256 KiB writes and reads) and memcpy
/// (64 MiB buffers) bandwidth, `bytes` each.
pub(crate) fn measure_limits(bytes: u64) -> Limits {
    use std::io::Write;
    const CHUNK: usize = 256 << 10;
    let mut l = Limits {
        bytes,
        ..Default::default()
    };
    if let Ok(listener) = TcpListener::bind("127.0.0.1:0")
        && let Ok(addr) = listener.local_addr()
    {
        let rx = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().ok()?;
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0u64;
            let t = Instant::now();
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n as u64,
                }
            }
            Some((got, t.elapsed().as_secs_f64()))
        });
        if let Ok(mut s) = TcpStream::connect(addr) {
            let buf = vec![0x5Au8; CHUNK];
            let mut sent = 0u64;
            while sent < bytes {
                if s.write_all(&buf).is_err() {
                    break;
                }
                sent += CHUNK as u64;
            }
            drop(s);
        }
        if let Ok(Some((got, secs))) = rx.join() {
            l.tcp_gib_s = got as f64 / (1u64 << 30) as f64 / secs.max(1e-9);
        }
    }
    let src = vec![0xA5u8; 64 << 20];
    let mut dst = vec![0u8; 64 << 20];
    let rounds = (bytes / src.len() as u64).max(1);
    let t = Instant::now();
    for _ in 0..rounds {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    l.memcpy_gib_s =
        (rounds * src.len() as u64) as f64 / (1u64 << 30) as f64 / t.elapsed().as_secs_f64();
    l
}

pub(crate) fn limits_table(l: &Limits, burst: &[RunResult]) -> String {
    let mut t = String::from("| limit | measured |\n|---|---|\n");
    let _ = writeln!(
        t,
        "| raw loopback TCP, one connection, 256 KiB writes | {:.2} GiB/s |",
        l.tcp_gib_s
    );
    let _ = writeln!(
        t,
        "| memcpy, 64 MiB buffers | {:.2} GiB/s |",
        l.memcpy_gib_s
    );
    for r in burst
        .iter()
        .filter(|r| r.skipped.is_none() && r.load_s > 0.0)
    {
        let gib_s = r.written_bytes as f64 / (1u64 << 30) as f64 / r.load_s;
        let _ = writeln!(
            t,
            "| {} burst ingest (producers' payload bytes) | {:.2} GiB/s = {:.0}% of memcpy |",
            r.system,
            gib_s,
            100.0 * gib_s / l.memcpy_gib_s.max(1e-9)
        );
    }
    let _ = writeln!(
        t,
        "\n{} MiB each, measured in the same run, before the scenarios, with nothing else of the harness running.",
        l.bytes >> 20
    );
    t
}
