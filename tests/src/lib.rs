//! Shared support of the ringside end-to-end tests: the ring tests' payload format and
//! tally (`ring_support`), the sidecar harness (`sidecar`: start a real `ringside serve`,
//! producers and gRPC subscribers), the chaos harness (`chaos_support`, `chaos_h2`, TLS in
//! `chaos_tls`, the grpc-web client `grpc_web`), memory measurement (`memory`: RssAnon,
//! cgroup v1 memory groups), the C library's tests (`c_build`: compiling and linking C
//! programs against the libringside of this test run; `ffi_support`: their manifests,
//! readers and fake peers), the exporter's tests (`nats`: a real nats-server, `ringside
//! export`, and a raw reader of the JetStream stream), and the rule for optional tools that
//! are missing (`tools`: skip, or fail under `RINGSIDE_REQUIRE_TOOLS`).
//!
//! The binaries of this crate are the processes the tests run: `ring_producer`,
//! `ring_hostile`, `ring_host`, and `ringside-under-test`, which is the `ringside` command
//! line itself (`ringside_sidecar::run`), built here so that `cargo test` builds it with the
//! tests instead of the tests running a nested `cargo build`.
pub mod c_build;
pub mod chaos_h2;
pub mod chaos_support;
pub mod chaos_tls;
pub mod ffi_support;
pub mod grpc_web;
pub mod memory;
pub mod nats;
pub mod ring_support;
pub mod sidecar;
pub mod tools;
