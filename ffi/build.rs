//! Gives the shared library its SONAME, `libringside.so.<ABI>`, so programs linked against
//! it record that name (and keep working across compatible updates of the installed
//! `libringside.so.<ABI>.<minor>.<patch>`). Only the cdylib gets it: the static library and
//! the rlib have no SONAME. `ffi/install.sh` installs the versioned file and its links.

/// The ABI version: bumped when a change breaks programs built against the old header
/// (a removed or changed function, a changed struct layout other than appending to a
/// size-versioned struct). `ffi/install.sh` reads it from here.
const ABI_VERSION: u32 = 0;

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        println!("cargo::rustc-cdylib-link-arg=-Wl,-soname,libringside.so.{ABI_VERSION}");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
