//! Generates the placement driver's API types from `proto/pd.proto` with a vendored
//! `protoc`; regions and peers are the engine's own types, not copies.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.extern_path(".tessera.metadata", "::tessera_engine::proto::metadata");
    config.extern_path(".tessera.raft", "::tessera_engine::raft::proto");
    config.btree_map(["."]);
    config.compile_protos(&["proto/pd.proto"], &["proto", "../engine/proto"])?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=../engine/proto");
    Ok(())
}
