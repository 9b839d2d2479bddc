//! The README's Rust example is this crate's top-level doctest (which compiles and runs it
//! against a real socket host): keep the two the same.

/// The lines of the first ```rust block of the README.
fn readme_example() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("```rust\n")
        .expect("the README has a ```rust block")
        + "```rust\n".len();
    let end = start + readme[start..].find("```").expect("the block ends");
    readme[start..end].lines().map(str::to_owned).collect()
}

/// The visible lines (not `# ` hidden ones) of the first doctest of `src/lib.rs`.
fn doctest_example() -> Vec<String> {
    let lib = include_str!("../src/lib.rs");
    let mut lines = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .skip_while(|l| !l.starts_with("```"))
        .skip(1);
    let mut out = Vec::new();
    for line in lines.by_ref() {
        if line.starts_with("```") {
            break;
        }
        if line == "#" || line.starts_with("# ") {
            continue;
        }
        out.push(line.to_owned());
    }
    out
}

#[test]
fn readme_example_is_the_doctest() {
    assert_eq!(
        readme_example(),
        doctest_example(),
        "README.md's Rust example and client/src/lib.rs's doctest differ: change both"
    );
}
