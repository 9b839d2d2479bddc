//! Generates the `naive.v1` types, client and server with the vendored `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .map_err(|e| format!("vendored protoc is not available for this platform: {e}"))?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/naive/v1/naive.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto/naive/v1/naive.proto");
    Ok(())
}
