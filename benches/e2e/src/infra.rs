//! Process, cgroup and /proc plumbing shared by every scenario: server processes
//! (optionally inside a cgroup v1 memory group), memory samplers, ports, the budget
//! lookup and the machine description.

use crate::*;

/// One sample of the server's memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) t: f64,
    pub(crate) anon: u64,
    pub(crate) shmem: u64,
}

pub(crate) const MIB: f64 = 1024.0 * 1024.0;

/// A byte size as a `ringside serve` flag value, in whole MiB (`16MiB`).
pub(crate) fn size_flag(bytes: u64) -> String {
    format!("{}MiB", bytes >> 20)
}

pub(crate) fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB)
}

pub(crate) use ringside_tests::memory::{MemCgroup as Cgroup, proc_memory};
pub(crate) use ringside_tests::sidecar::free_port;

/// A server process, killed (by its own pid) when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Server {
    pub(crate) fn spawn(cg: Option<&Cgroup>, bin: &Path, args: &[String], log: PathBuf) -> Server {
        let mut cmd = match cg {
            Some(cg) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg("echo $$ > \"$0/cgroup.procs\" && exec \"$@\"")
                    .arg(&cg.0)
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("server log file"))
            .spawn()
            .expect("spawn server");
        Server { child, log }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn wait_ready(&mut self, port: u16, socket: Option<&Path>) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("exited early ({st}): {}", self.stderr()));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() && socket.is_none_or(Path::exists) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 30 s: {}", self.stderr()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn stderr(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns the exit status.
    pub(crate) fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return Some(st);
        }
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The machine's CPU time so far (all CPUs, in ticks): in all, and stolen by the
/// hypervisor (the `steal` column of `/proc/stat`'s `cpu` line). None where unreadable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuTimes {
    total: u64,
    steal: u64,
}

impl CpuTimes {
    pub(crate) fn now() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal [guest guest_nice, counted in user]
        Some(CpuTimes {
            total: ticks.iter().take(8).sum(),
            steal: *ticks.get(7)?,
        })
    }

    /// The share of CPU time the hypervisor took from this machine since `self`, in
    /// percent: time the scheduler had a task ready on a virtual CPU that did not run.
    pub(crate) fn steal_pct_since(self) -> Option<f64> {
        let now = CpuTimes::now()?;
        let total = now.total.checked_sub(self.total)?;
        (total > 0).then(|| 100.0 * now.steal.saturating_sub(self.steal) as f64 / total as f64)
    }
}

/// Samples `/proc/<pid>/status` every 20 ms until `stop` or the process is gone.
pub(crate) fn spawn_sampler(
    pid: u32,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match proc_memory(pid) {
                Some(m) => v.push(Sample {
                    t: t0.elapsed().as_secs_f64(),
                    anon: m.anon,
                    shmem: m.shmem,
                }),
                None => break,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        v
    })
}

pub(crate) fn budget_bytes(ringside: &Path, p: &Params) -> Result<u64, String> {
    let flags = p.serve_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    ringside_tests::sidecar::budget_bytes_of(ringside, &flags)
}

pub(crate) async fn connect(endpoint: &str) -> Result<Channel, String> {
    let ep = Endpoint::from_shared(endpoint.to_string()).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ep.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Opens a `Subscribe` stream on `ch` from the newest frame, unfiltered.
pub(crate) async fn subscribe_latest(
    ch: Channel,
) -> Result<tonic::Streaming<ringside_proto::v1::Batch>, String> {
    let req = ringside_proto::v1::SubscribeRequest {
        start: Some(Start::Latest(true)),
        ..Default::default()
    };
    Ok(RingsideClient::new(ch)
        .subscribe(req)
        .await
        .map_err(|e| e.to_string())?
        .into_inner())
}

pub(crate) fn run_to_json(mut child: Child) -> (serde_json::Value, f64) {
    let t = Instant::now();
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let _ = child.wait();
    let wall = t.elapsed().as_secs_f64();
    (
        serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null),
        wall,
    )
}

/// Paths of the binaries the harness runs.
#[derive(Debug)]
pub(crate) struct Bins {
    pub(crate) ringside: PathBuf,
    pub(crate) naive_server: PathBuf,
    pub(crate) naive_load: PathBuf,
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|r| r.trim().to_string()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{cores} cores ({cpu}), {mem} RAM, Linux {kernel}; load average at the end of the run {load} (the machine is shared, so latency tails vary from run to run)"
    )
}

/// Starts `system`'s server on `port`: ringside with the scenario's `serve` flags and its
/// producer socket at `socket`, or the naive server with a history of a million frames;
/// inside `cg` when one is given.
pub(crate) fn spawn_server(
    system: System,
    bins: &Bins,
    p: &Params,
    port: u16,
    socket: &Path,
    cg: Option<&Cgroup>,
    log: PathBuf,
) -> Server {
    let listen = format!("127.0.0.1:{port}");
    match system {
        System::Ringside => {
            let mut args: Vec<String> = vec!["serve".into()];
            args.extend(p.serve_flags());
            args.extend([
                "--listen".into(),
                listen,
                "--socket".into(),
                socket.display().to_string(),
                "--adopt-grace".into(),
                "100ms".into(),
            ]);
            Server::spawn(cg, &bins.ringside, &args, log)
        }
        System::Naive => {
            let args = vec![
                "--listen".into(),
                listen,
                "--history".into(),
                "1000000".into(),
            ];
            Server::spawn(cg, &bins.naive_server, &args, log)
        }
    }
}

/// The Prometheus text a sidecar serves on `127.0.0.1:port` (`--metrics-listen`), read
/// with one HTTP/1.0 GET.
pub(crate) fn scrape_metrics(port: u16) -> Result<String, String> {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    conn.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

/// The sum of every series of metric `name` (all label sets) in Prometheus text.
pub(crate) fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
