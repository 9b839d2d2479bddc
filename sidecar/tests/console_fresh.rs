//! Fails when the committed console bundle (`console/dist/`) is stale: some
//! file it was built from (`console/src/**`, `console/static/**`, the proto,
//! `package-lock.json`, the build config) changed since `npm run build` wrote
//! `console/dist/manifest.json`, or a bundled file was edited by hand.
//!
//! Needs no Node: it recomputes the SHA-256 of the inputs and outputs the
//! manifest lists, the same way `console/build.mjs` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const REBUILD: &str = "run `cd console && npm ci && npm run build` and commit console/dist/";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the sidecar crate lives inside the repository")
        .to_path_buf()
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under `rel` (a file or a directory), as repository-relative paths with `/`.
fn files_under(root: &Path, rel: &str, out: &mut Vec<String>) {
    let abs = root.join(rel);
    if abs.is_file() {
        out.push(rel.to_owned());
        return;
    }
    let entries =
        std::fs::read_dir(&abs).unwrap_or_else(|e| panic!("listing {}: {e}", abs.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("listing {}: {e}", abs.display()));
        let name = entry
            .file_name()
            .into_string()
            .unwrap_or_else(|n| panic!("a file name under {} is not UTF-8: {n:?}", abs.display()));
        files_under(root, &format!("{rel}/{name}"), out);
    }
}

fn hashes(value: &serde_json::Value, what: &str) -> BTreeMap<String, String> {
    value
        .as_object()
        .unwrap_or_else(|| {
            panic!("console/dist/manifest.json: `{what}` is not an object; {REBUILD}")
        })
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// What differs between the hashes recorded and the hashes now.
fn differences(recorded: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, hash) in now {
        match recorded.get(path) {
            None => out.push(format!("  new since the build:     {path}")),
            Some(h) if h != hash => out.push(format!("  changed since the build: {path}")),
            Some(_) => {}
        }
    }
    for path in recorded.keys().filter(|p| !now.contains_key(*p)) {
        out.push(format!("  gone since the build:    {path}"));
    }
    out
}

#[test]
fn committed_console_bundle_is_fresh() {
    let root = repo_root();
    let manifest_path = root.join("console/dist/manifest.json");
    let text = std::fs::read_to_string(&manifest_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}; {REBUILD}", manifest_path.display()));
    let manifest: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}; {REBUILD}", manifest_path.display()));

    let roots: Vec<String> = manifest["roots"]
        .as_array()
        .unwrap_or_else(|| panic!("console/dist/manifest.json has no `roots` list; {REBUILD}"))
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert!(
        roots.iter().any(|r| r == "console/src") && roots.iter().any(|r| r.ends_with(".proto")),
        "console/dist/manifest.json must cover console/src and the proto; {REBUILD}"
    );
    let mut inputs = Vec::new();
    for r in &roots {
        files_under(&root, r, &mut inputs);
    }
    let inputs_now: BTreeMap<String, String> = inputs
        .into_iter()
        .map(|p| {
            let h = sha256_hex(&root.join(&p));
            (p, h)
        })
        .collect();
    let mut stale = differences(&hashes(&manifest["inputs"], "inputs"), &inputs_now);

    let mut outputs = Vec::new();
    files_under(&root, "console/dist", &mut outputs);
    let outputs_now: BTreeMap<String, String> = outputs
        .into_iter()
        .filter(|p| p != "console/dist/manifest.json")
        .map(|p| {
            let h = sha256_hex(&root.join(&p));
            (p, h)
        })
        .collect();
    stale.extend(
        differences(&hashes(&manifest["outputs"], "outputs"), &outputs_now)
            .into_iter()
            .map(|d| format!("{d} (bundle output)")),
    );

    assert!(
        stale.is_empty(),
        "the committed console bundle (console/dist/) is stale:\n{}\n{REBUILD}",
        stale.join("\n")
    );
}
