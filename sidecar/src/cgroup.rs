//! Detects the memory limit of the cgroup this process runs in (v1 and v2).

use std::path::{Path, PathBuf};

/// A memory limit found in a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLimit {
    /// The limit in bytes.
    pub bytes: u64,
    /// The file it was read from (for messages).
    pub source: PathBuf,
}

/// Values at or above this mean "no limit" in cgroup v1 (it reports
/// `PAGE_COUNTER_MAX` pages rounded, about 2^63).
const V1_UNLIMITED: u64 = 1 << 62;

/// The effective memory limit of this process's cgroup, if any is set.
pub fn memory_limit() -> Option<CgroupLimit> {
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    memory_limit_in(Path::new("/sys/fs/cgroup"), &proc_cgroup)
}

/// [`memory_limit`] against a given cgroupfs root and `/proc/self/cgroup` text (testable).
pub fn memory_limit_in(root: &Path, proc_cgroup: &str) -> Option<CgroupLimit> {
    let mut best: Option<CgroupLimit> = None;
    let mut consider = |cand: Option<CgroupLimit>| {
        if let Some(c) = cand
            && best.as_ref().is_none_or(|b| c.bytes < b.bytes)
        {
            best = Some(c);
        }
    };
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            consider(v1_limit(&root.join("memory"), rel));
        } else if controllers.is_empty() {
            consider(v2_limit(root, rel));
            consider(v2_limit(&root.join("unified"), rel));
        }
    }
    best
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// cgroup v1: the hierarchical limit (min over ancestors) from memory.stat,
/// else memory.limit_in_bytes of the group or, in a namespace where the path
/// is not visible, of the root.
fn v1_limit(mem_root: &Path, rel: &str) -> Option<CgroupLimit> {
    let dir = [mem_root.join(rel), mem_root.to_path_buf()]
        .into_iter()
        .find(|d| d.join("memory.limit_in_bytes").exists())?;
    let stat = dir.join("memory.stat");
    let hier = std::fs::read_to_string(&stat).ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("hierarchical_memory_limit "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    let (bytes, source) = match hier {
        Some(b) => (b, stat),
        None => {
            let f = dir.join("memory.limit_in_bytes");
            (read_u64(&f)?, f)
        }
    };
    (bytes < V1_UNLIMITED).then_some(CgroupLimit { bytes, source })
}

/// cgroup v2: the smallest `memory.max` from the group up to the root.
fn v2_limit(root: &Path, rel: &str) -> Option<CgroupLimit> {
    let mut dir = root.join(rel);
    let mut best: Option<CgroupLimit> = None;
    loop {
        let f = dir.join("memory.max");
        if let Ok(text) = std::fs::read_to_string(&f)
            && let Ok(bytes) = text.trim().parse::<u64>()
            && best.as_ref().is_none_or(|b| bytes < b.bytes)
        {
            best = Some(CgroupLimit { bytes, source: f });
        }
        if dir == root || !dir.pop() || !dir.starts_with(root) {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ringside-cgroup-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("tmp dir");
        d
    }

    #[test]
    fn v1_limit_is_found() {
        let root = tmpdir("v1");
        let g = root.join("memory/app");
        std::fs::create_dir_all(&g).expect("dir");
        std::fs::write(g.join("memory.limit_in_bytes"), "104857600\n").expect("write");
        let got = memory_limit_in(&root, "4:memory:/app\n1:cpu:/\n").expect("limit");
        assert_eq!(got.bytes, 100 << 20);
        std::fs::write(
            g.join("memory.stat"),
            "cache 0\nhierarchical_memory_limit 52428800\n",
        )
        .expect("write");
        assert_eq!(
            memory_limit_in(&root, "4:memory:/app\n")
                .expect("limit")
                .bytes,
            50 << 20
        );
        std::fs::write(
            g.join("memory.stat"),
            "hierarchical_memory_limit 9223372036854771712\n",
        )
        .expect("write");
        assert_eq!(memory_limit_in(&root, "4:memory:/app\n"), None, "unlimited");
    }

    #[test]
    fn v2_limit_takes_the_smallest_ancestor() {
        let root = tmpdir("v2");
        let g = root.join("a/b");
        std::fs::create_dir_all(&g).expect("dir");
        std::fs::write(g.join("memory.max"), "max\n").expect("write");
        std::fs::write(root.join("a/memory.max"), "2097152\n").expect("write");
        let got = memory_limit_in(&root, "0::/a/b\n").expect("limit");
        assert_eq!(got.bytes, 2 << 20);
        assert!(memory_limit_in(&root, "0::/\n").is_none());
    }
}
