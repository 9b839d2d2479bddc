//! Prints the producer benchmark tables from criterion's saved results, and optionally
//! writes them into a markdown document between the markers
//! `<!-- producer-table:begin -->` and `<!-- producer-table:end -->`.
//!
//! ```text
//! cargo run -p ringside-benches --bin producer_table -- [--criterion-dir DIR] [--write FILE]
//! ```
//!
//! DIR defaults to `$CARGO_TARGET_DIR/criterion`, else the workspace's `target/criterion`.

use std::path::PathBuf;
use std::process::ExitCode;

use ringside_benches::table;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("producer_table: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut criterion_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| PathBuf::from(t).join("criterion"))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/criterion"));
    let mut write = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--criterion-dir") => {
                criterion_dir = args.next().ok_or("--criterion-dir needs a path")?.into();
            }
            Some("--write") => {
                write = Some(PathBuf::from(args.next().ok_or("--write needs a file")?))
            }
            Some("-h" | "--help") => {
                println!(
                    "usage: producer_table [--criterion-dir DIR] [--write FILE]\n\
                     Prints the producer benchmark tables; --write replaces the block between \
                     {} and {} in FILE.",
                    table::BEGIN_MARKER,
                    table::END_MARKER
                );
                return Ok(());
            }
            _ => return Err(format!("unknown argument {arg:?} (try --help)")),
        }
    }
    let measurements = table::collect(&criterion_dir)?;
    if measurements.is_empty() {
        return Err(format!(
            "no producer_* results under {}; run `cargo bench -p ringside-benches --bench producer` first",
            criterion_dir.display()
        ));
    }
    let block = format!(
        "Machine: {}.\n\n{}",
        table::machine_summary(),
        table::render(&measurements)
    );
    print!("{block}");
    if let Some(path) = write {
        let doc = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let updated = table::splice(&doc, &block).ok_or_else(|| {
            format!(
                "{} has no {} ... {} block",
                path.display(),
                table::BEGIN_MARKER,
                table::END_MARKER
            )
        })?;
        std::fs::write(&path, updated).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote the tables into {}", path.display());
    }
    Ok(())
}
