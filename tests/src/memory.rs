//! Memory measurement shared by the tests, the chaos harness and the end-to-end benchmark
//! harness (`benches/e2e`): a cgroup v1 memory group with a hard limit, and a process's
//! private (RssAnon) and shared (RssShmem) resident memory.

use std::path::Path;
use std::time::Duration;

/// A process's resident memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcMemory {
    /// Private anonymous memory (`RssAnon`): what grows when a server buffers.
    pub anon: u64,
    /// Shared memory mapped and touched (`RssShmem`): the ring, for ringside.
    pub shmem: u64,
}

/// The process's `RssAnon` and `RssShmem`, from `/proc/<pid>/status`; `None` once the
/// process is gone.
pub fn proc_memory(pid: u32) -> Option<ProcMemory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Some(ProcMemory {
        anon: field("RssAnon:")?,
        shmem: field("RssShmem:")?,
    })
}

/// The process's RssAnon in bytes, from `/proc/<pid>/status`.
pub fn rss_anon(pid: u32) -> Option<u64> {
    proc_memory(pid).map(|m| m.anon)
}

/// A cgroup v1 memory group with a hard limit, removed on drop (once empty).
#[derive(Debug)]
pub struct MemCgroup(pub std::path::PathBuf);

impl MemCgroup {
    /// Creates `/sys/fs/cgroup/memory/<name>-<pid>` with `memory.limit_in_bytes = limit`.
    /// `Err` says why not (no cgroup v1 memory hierarchy, not root, read-only cgroupfs).
    pub fn create(name: &str, limit: u64) -> Result<MemCgroup, String> {
        let root = Path::new("/sys/fs/cgroup/memory");
        if !root.join("memory.limit_in_bytes").exists() {
            return Err(format!(
                "{} is not a cgroup v1 memory hierarchy",
                root.display()
            ));
        }
        let dir = root.join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let cg = MemCgroup(dir);
        cg.set_limit(limit)?;
        Ok(cg)
    }

    /// Writes one of its control files (`memory.limit_in_bytes`, ...).
    pub fn write(&self, file: &str, value: &str) -> Result<(), String> {
        std::fs::write(self.0.join(file), value).map_err(|e| format!("cannot write {file}: {e}"))
    }

    /// One of its files as text (empty if unreadable), e.g. `cgroup.procs`.
    pub fn read_text(&self, file: &str) -> String {
        std::fs::read_to_string(self.0.join(file)).unwrap_or_default()
    }

    /// A number from one of its files (`memory.max_usage_in_bytes`), or a `key value` line of
    /// `memory.oom_control` / `memory.stat` when `key` is given.
    pub fn read(&self, file: &str, key: Option<&str>) -> Option<u64> {
        let text = std::fs::read_to_string(self.0.join(file)).ok()?;
        match key {
            None => text.trim().parse().ok(),
            Some(k) => text.lines().find_map(|l| {
                let (name, v) = l.split_once(' ')?;
                (name == k).then(|| v.trim().parse().ok())?
            }),
        }
    }
}

impl MemCgroup {
    /// Sets the hard limit, `memory.limit_in_bytes`, and, where swap accounting exists,
    /// `memory.memsw.limit_in_bytes` to the same value, in the order the kernel accepts
    /// (the memory limit may never exceed the memory+swap limit).
    pub fn set_limit(&self, limit: u64) -> Result<(), String> {
        let value = limit.to_string();
        let current = self.read("memory.limit_in_bytes", None).unwrap_or(u64::MAX);
        if limit > current {
            // Raising: memsw first. Without swap accounting the file does not exist.
            let _ = self.write("memory.memsw.limit_in_bytes", &value);
            self.write("memory.limit_in_bytes", &value)
        } else {
            self.write("memory.limit_in_bytes", &value)?;
            let _ = self.write("memory.memsw.limit_in_bytes", &value);
            Ok(())
        }
    }

    /// Processes the kernel's OOM killer killed in the group.
    pub fn oom_kills(&self) -> u64 {
        self.read("memory.oom_control", Some("oom_kill"))
            .unwrap_or(0)
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
