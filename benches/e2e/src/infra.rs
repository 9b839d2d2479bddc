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

pub(crate) struct Cgroup(pub(crate) PathBuf);

impl Cgroup {
    pub(crate) fn create(name: &str, limit: u64) -> Result<Cgroup, String> {
        let root = Path::new("/sys/fs/cgroup/memory");
        if !root.join("memory.limit_in_bytes").exists() {
            return Err(format!(
                "{} is not a cgroup v1 memory hierarchy",
                root.display()
            ));
        }
        let dir = root.join(format!("ringside-bench-{}-{name}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let cg = Cgroup(dir);
        cg.write("memory.limit_in_bytes", &limit.to_string())?;
        // No swap here, but where there is, count it too.
        let _ = cg.write("memory.memsw.limit_in_bytes", &limit.to_string());
        Ok(cg)
    }

    pub(crate) fn write(&self, file: &str, value: &str) -> Result<(), String> {
        std::fs::write(self.0.join(file), value).map_err(|e| format!("cannot write {file}: {e}"))
    }

    pub(crate) fn read_u64(&self, file: &str) -> u64 {
        std::fs::read_to_string(self.0.join(file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub(crate) fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.0.join("memory.oom_control"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove {}", self.0.display());
    }
}

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

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub(crate) fn proc_status(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let l = s.lines().find(|l| l.starts_with(name))?;
        Some(l.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Some((field("RssAnon:")?, field("RssShmem:")?))
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
            match proc_status(pid) {
                Some((anon, shmem)) => v.push(Sample {
                    t: t0.elapsed().as_secs_f64(),
                    anon,
                    shmem,
                }),
                None => break,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        v
    })
}

pub(crate) fn budget_bytes(ringside: &Path, p: &Params) -> Result<u64, String> {
    let out = Command::new(ringside)
        .args(["serve", "--print-budget"])
        .args(p.serve_flags())
        .output()
        .map_err(|e| format!("run {}: {e}", ringside.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.trim_start().starts_with("total"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no budget total in: {text}"))
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
