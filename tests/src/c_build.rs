//! Building C programs against the C library (`libringside`) that cargo builds for this test
//! run: `ringside-ffi` is a dev-dependency of this crate, so `cargo test` puts its
//! `libringside.a` and `libringside.so` in `target/<profile>/deps`, next to the test binary,
//! and no test runs a nested `cargo build`.
//!
//! Four ways to link, as a C user would: the shared library (`-lringside`, loaded under its
//! SONAME `libringside.so.0`), the static archive, and the installed library described by
//! `pkg-config` (`ffi/install.sh` into a temporary prefix), shared and `--static`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The C compiler: `$CC`, else the first of `cc`, `gcc`, `clang` that runs.
pub fn find_c_compiler() -> Result<String, String> {
    find_compiler("CC", &["cc", "gcc", "clang"])
}

/// The C++ compiler: `$CXX`, else the first of `c++`, `g++`, `clang++` that runs.
pub fn find_cxx_compiler() -> Result<String, String> {
    find_compiler("CXX", &["c++", "g++", "clang++"])
}

fn find_compiler(env: &str, defaults: &[&str]) -> Result<String, String> {
    let candidates: Vec<String> = match std::env::var(env) {
        Ok(cc) if !cc.trim().is_empty() => vec![cc],
        _ => defaults.iter().map(|s| (*s).to_owned()).collect(),
    };
    for cc in &candidates {
        let ok = Command::new(cc)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(cc.clone());
        }
    }
    Err(format!(
        "no compiler found (tried {}; set ${env})",
        candidates.join(", ")
    ))
}

/// The repository's `ffi/` directory.
pub fn ffi_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ffi")
}

/// `ffi/include`, where `ringside.h` lives.
pub fn include_dir() -> PathBuf {
    ffi_dir().join("include")
}

/// `target/<profile>/deps`: where cargo puts the C libraries it builds for this test run.
pub fn lib_dir() -> PathBuf {
    crate::sidecar::bin_dir().join("deps")
}

fn built_lib(name: &str) -> Result<PathBuf, String> {
    let lib = lib_dir().join(name);
    if lib.exists() {
        Ok(lib)
    } else {
        Err(format!(
            "{} missing: run the tests with `cargo test -p ringside-tests`, which builds the ffi crate's libraries",
            lib.display()
        ))
    }
}

/// `libringside.a` of this test run.
pub fn static_lib() -> Result<PathBuf, String> {
    built_lib("libringside.a")
}

/// `libringside.so` of this test run.
pub fn shared_lib() -> Result<PathBuf, String> {
    built_lib("libringside.so")
}

/// Libraries a static libringside needs besides libc.
pub const STATIC_LIBS: &[&str] = &["-lpthread", "-ldl", "-lm"];

/// Flags every C program of the tests is built with.
pub const CFLAGS: &[&str] = &[
    "-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread", "-g", "-O1",
];

/// How a C program is linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// `-I ffi/include -L DIR -lringside` with an rpath, where DIR holds the library under its
    /// SONAME (`libringside.so.0`), as an installed copy would.
    Shared,
    /// `target/<profile>/deps/libringside.a -lpthread -ldl -lm`.
    Static,
    /// `pkg-config --cflags --libs ringside` after `ffi/install.sh` into `OUT_DIR/prefix`,
    /// plus an rpath to the prefix's lib dir.
    PkgConfig,
    /// `pkg-config --static --cflags --libs ringside` after `ffi/install.sh`.
    PkgConfigStatic,
}

/// Runs `cmd`, returning its output, or an error with both output streams.
pub fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A directory holding this run's shared library under its SONAME and its link name
/// (`libringside.so.0` and `libringside.so`, symbolic links to `deps/libringside.so`), so a
/// program linked with `-lringside` finds `libringside.so.0` at run time. Created in `dir`.
pub fn soname_dir(dir: &Path) -> Result<PathBuf, String> {
    let lib = shared_lib()?;
    let out = dir.join("soname-lib");
    if !out.exists() {
        std::fs::create_dir_all(&out).map_err(|e| format!("mkdir {}: {e}", out.display()))?;
        for name in ["libringside.so.0", "libringside.so"] {
            std::os::unix::fs::symlink(&lib, out.join(name))
                .map_err(|e| format!("symlink {name}: {e}"))?;
        }
    }
    Ok(out)
}

/// Installs the library, header and pkg-config files of this run into `prefix` with
/// `ffi/install.sh --prefix PREFIX --from target/<profile>/deps`.
pub fn install(prefix: &Path) -> Result<Output, String> {
    let from = shared_lib()?
        .parent()
        .map(Path::to_path_buf)
        .ok_or("the library has no directory")?;
    run(Command::new("sh")
        .arg(ffi_dir().join("install.sh"))
        .arg("--prefix")
        .arg(prefix)
        .arg("--from")
        .arg(from))
}

/// `pkg-config ARGS ringside` against the `.pc` files installed under `prefix`, split into
/// words.
pub fn pkg_config(prefix: &Path, args: &[&str]) -> Result<Vec<String>, String> {
    let out = run(Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .env_remove("PKG_CONFIG_LIBDIR")
        .args(args)
        .arg("ringside"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// Compiles the C source `src` into `out_dir` (an executable named after the source and
/// the link mode) with [`CFLAGS`], `extra` flags, and `link`.
pub fn compile(src: &Path, out_dir: &Path, link: Link, extra: &[&str]) -> Result<PathBuf, String> {
    let cc = find_c_compiler()?;
    let stem = src
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "program".to_owned());
    let exe = out_dir.join(format!("{stem}-{link:?}"));
    let mut cmd = Command::new(&cc);
    cmd.args(CFLAGS).args(extra).arg(src).arg("-o").arg(&exe);
    match link {
        Link::Shared => {
            let dir = soname_dir(out_dir)?;
            cmd.arg("-I")
                .arg(include_dir())
                .arg("-L")
                .arg(&dir)
                .arg("-lringside")
                .arg(format!("-Wl,-rpath,{}", dir.display()));
        }
        Link::Static => {
            cmd.arg("-I")
                .arg(include_dir())
                .arg(static_lib()?)
                .args(STATIC_LIBS);
        }
        Link::PkgConfig | Link::PkgConfigStatic => {
            let prefix = out_dir.join("prefix");
            if !prefix.join("lib/pkgconfig/ringside.pc").exists() {
                install(&prefix)?;
            }
            let args: &[&str] = if link == Link::PkgConfig {
                &["--cflags", "--libs"]
            } else {
                &["--static", "--cflags", "--libs"]
            };
            cmd.args(pkg_config(&prefix, args)?);
            if link == Link::PkgConfig {
                cmd.arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()));
            }
        }
    }
    run(&mut cmd)?;
    Ok(exe)
}

/// The shared libraries an executable or library names as needed (`readelf -d`).
pub fn needed_libraries(binary: &Path) -> Result<Vec<String>, String> {
    let out = run(Command::new("readelf").arg("-d").arg(binary))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| {
            let start = l.find('[')? + 1;
            let end = l.rfind(']')?;
            Some(l[start..end].to_owned())
        })
        .collect())
}

/// The SONAME a shared library carries (`readelf -d`), if any.
pub fn soname(library: &Path) -> Result<Option<String>, String> {
    let out = run(Command::new("readelf").arg("-d").arg(library))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("(SONAME)"))
        .and_then(|l| {
            let start = l.find('[')? + 1;
            let end = l.rfind(']')?;
            Some(l[start..end].to_owned())
        }))
}
