//! Generates the wire and disk types from `proto/` with a vendored `protoc`, so that
//! building Tessera needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;

    let mut raft = prost_build::Config::new();
    raft.protoc_executable(&protoc);
    raft.compile_protos(&["proto/raft.proto"], &["proto"])?;

    // The store's types refer to the Raft types generated above instead of copies.
    let mut store = prost_build::Config::new();
    store.protoc_executable(&protoc);
    store.extern_path(".tessera.raft", "crate::raft::proto");
    store.compile_protos(&["proto/store.proto"], &["proto"])?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
