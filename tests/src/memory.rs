//! Memory measurement shared by the memory test and the chaos harness: a cgroup v1 memory
//! group with a hard limit, and a process's RssAnon.

use std::path::Path;
use std::time::Duration;

/// The process's RssAnon in bytes, from `/proc/<pid>/status`.
pub fn rss_anon(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("RssAnon:"))?;
    Some(l.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
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
        cg.write("memory.limit_in_bytes", &limit.to_string())?;
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
