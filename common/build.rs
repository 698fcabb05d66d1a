//! Compiles `proto/licsync/v1/*.proto` with the `protoc` shipped inside the
//! `protoc-bin-vendored` crate, so a fresh machine builds with cargo alone.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let protos = [
        root.join("licsync/v1/registration.proto"),
        root.join("licsync/v1/sync.proto"),
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // The encoded descriptors are served by the control plane's gRPC reflection.
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("licsync_descriptor.bin");
    // Every generated service and client uses the small-buffer codec (`src/codec.rs`).
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptors)
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_with_config(config, &protos, &[root])?;
    Ok(())
}
