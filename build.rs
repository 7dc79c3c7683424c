//! Generates the server side of the Open Inference Protocol's gRPC service
//! (proto/grpc_predict_v2.proto) for src/grpc/, with the protoc that `protoc-bin-vendored`
//! ships, so that a machine without one builds as well.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build reads PROTOC; a build script's environment is its own process's.
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    // The descriptors, for the reflection service (grpcurl and other generic clients).
    let descriptors = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("inference_descriptor.bin");
    tonic_prost_build::configure()
        .build_client(false)
        .build_transport(false)
        .file_descriptor_set_path(descriptors)
        // A malformed message is INVALID_ARGUMENT, not tonic's INTERNAL (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::ProtoCodec")
        .compile_protos(&["proto/grpc_predict_v2.proto"], &["proto"])?;
    Ok(())
}
