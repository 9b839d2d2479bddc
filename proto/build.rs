//! Generates the `ringside.v1` types, client and server, plus a file
//! descriptor set for gRPC server reflection. Uses the vendored `protoc`, so no
//! system protobuf compiler is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .map_err(|e| format!("vendored protoc is not available for this platform: {e}"))?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // Payloads stay `bytes::Bytes` on the client side: decoding a batch then
    // slices frames out of the received buffer instead of copying each payload.
    config.bytes([".ringside.v1.Frame.payload"]);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("ringside_descriptor.bin"))
        .compile_with_config(
            config,
            &["ringside/v1/ringside.proto", "ringside/v1/tracing.proto"],
            &["."],
        )?;
    println!("cargo:rerun-if-changed=ringside/v1/ringside.proto");
    println!("cargo:rerun-if-changed=ringside/v1/tracing.proto");
    Ok(())
}
