//! Compiles the gRPC contract with protox (pure Rust; no system `protoc`) and
//! keeps the descriptor set for gRPC server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> anyhow::Result<()> {
    let proto = "proto/credbroker/v1/broker.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("credbroker_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // tonic's prost codec with small buffers (src/lib.rs, `proto::LeanCodec`).
        .codec_path("crate::proto::LeanCodec")
        // Messages that carry secrets get a hand-written, redacting Debug (src/lib.rs).
        .skip_debug([
            ".credbroker.v1.AuthToken",
            ".credbroker.v1.ApiKey",
            ".credbroker.v1.MintAccessTokenResponse",
        ])
        .compile_fds(fds)?;
    Ok(())
}
