//! Fails when the checked-in `ffi/include/ringside.h` is not exactly what
//! cbindgen generates from the current sources.
//!
//! Regenerate with `RINGSIDE_BLESS=1 cargo test -p ringside-ffi --test header_fresh`.

use std::path::Path;

const REGENERATE: &str = "RINGSIDE_BLESS=1 cargo test -p ringside-ffi --test header_fresh";

#[test]
fn checked_in_header_is_fresh() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("reading ffi/cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen failed: {e}"));
    let mut generated = Vec::new();
    bindings.write(&mut generated);

    let header_path = crate_dir.join("include/ringside.h");
    if std::env::var_os("RINGSIDE_BLESS").is_some() {
        std::fs::write(&header_path, &generated)
            .unwrap_or_else(|e| panic!("writing {}: {e}", header_path.display()));
        eprintln!("wrote {}", header_path.display());
        return;
    }

    // Also keep a copy next to the build output for diffing by hand.
    let tmp = tempfile::Builder::new()
        .prefix("ringside-generated-")
        .suffix(".h")
        .tempfile()
        .expect("temp file");
    std::fs::write(tmp.path(), &generated).expect("write temp header");

    let checked_in = std::fs::read(&header_path).unwrap_or_default();
    if checked_in != generated {
        let (_, kept) = tmp.keep().expect("keep temp header");
        let first_diff = String::from_utf8_lossy(&generated)
            .lines()
            .zip(String::from_utf8_lossy(&checked_in).lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| {
                format!(
                    "first difference at line {}:\n  generated:  {a}\n  checked in: {b}",
                    i + 1
                )
            })
            .unwrap_or_else(|| "files differ in length".to_owned());
        panic!(
            "ffi/include/ringside.h is stale.\n{first_diff}\n\
             generated header kept at {}\n\
             diff with: diff -u {} {}\n\
             regenerate with: {REGENERATE}",
            kept.display(),
            header_path.display(),
            kept.display(),
        );
    }
}
