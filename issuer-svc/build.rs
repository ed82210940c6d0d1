//! Compiles `proto/meshca.proto` with protox (no system `protoc`) and writes the descriptor set
//! for server reflection; compiles `proto/spiffe/workload.proto` (the SPIFFE Workload API, server
//! side only) on its own, so the issuer's reflection lists only `meshca.v1`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/meshca.proto");
    println!("cargo:rerun-if-changed=proto/spiffe/workload.proto");
    let fds = protox::compile(["meshca.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("meshca_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // prost's codec but for decode errors, which are the caller's (InvalidArgument).
        .codec_path("crate::api::codec::StrictCodec")
        .compile_fds(fds)?;
    // No package: the specification's paths are `/SpiffeWorkloadAPI/<Method>`; prost names the
    // output `_.rs`.
    let workload = protox::compile(["workload.proto"], ["proto/spiffe"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .codec_path("crate::api::codec::StrictCodec")
        .compile_fds(workload)?;
    Ok(())
}
