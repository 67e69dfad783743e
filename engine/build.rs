//! Generates the wire and disk types from `proto/` with a vendored `protoc`, so that
//! building Tessera needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;

    let mut raft = prost_build::Config::new();
    raft.protoc_executable(&protoc);
    raft.compile_protos(&["proto/raft.proto"], &["proto"])?;

    // Transaction records stand alone: they refer to nothing else.
    let mut mvcc = prost_build::Config::new();
    mvcc.protoc_executable(&protoc);
    mvcc.compile_protos(&["proto/mvcc.proto"], &["proto"])?;

    // Metadata, commands and frames refer to the Raft and transaction record types
    // generated above instead of copies; they land in `crate::proto` as sibling modules.
    let mut shared = prost_build::Config::new();
    shared.protoc_executable(&protoc);
    shared.extern_path(".tessera.raft", "crate::raft::proto");
    shared.extern_path(".tessera.mvcc", "crate::proto::mvcc");
    shared
        .compile_protos(&["proto/metadata.proto", "proto/command.proto", "proto/frame.proto"], &["proto"])?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
