//! Generates the gRPC server and client code and the descriptor set served by reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps the build free of a system protobuf-compiler package.
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/sandboxd/v1/sandbox.proto",
        "proto/sandboxd/v1/routing.proto",
        "proto/sandboxd/v1/sync.proto",
        "proto/sandboxd/v1/artifact.proto",
    ];
    tonic_prost_build::configure()
        // Prost's codec with decode errors mapped to INVALID_ARGUMENT (src/wire/codec.rs).
        .codec_path("crate::wire::codec::Codec")
        .file_descriptor_set_path(out_dir.join("sandboxd_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
