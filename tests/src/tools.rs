//! Optional tools of the test machine (valgrind, a C++ compiler, nats-server): a test that
//! cannot find one skips with a `SKIPPED:` line saying what to install, unless
//! `RINGSIDE_REQUIRE_TOOLS` is set to something other than `0` (as `.ci/run` does), which
//! makes the missing tool a test failure instead.

/// True when a missing optional tool must fail the test instead of skipping it.
pub fn required() -> bool {
    std::env::var_os("RINGSIDE_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Skips (prints `SKIPPED: <why>` on stderr) or, when tools are [`required`], fails with
/// `why`. The caller returns from the test after it.
pub fn skip_or_fail(why: &str) {
    assert!(
        !required(),
        "{why} (RINGSIDE_REQUIRE_TOOLS is set, so this fails instead of skipping)"
    );
    eprintln!("SKIPPED: {why}");
}
