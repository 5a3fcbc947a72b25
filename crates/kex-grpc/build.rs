//! Generates the gRPC code from proto/kex.proto with the vendored protoc (no system protoc).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Edition 2021: setting an environment variable in a single-threaded build script is safe.
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/kex.proto"], &["proto"])?;
    Ok(())
}
