//! Generates the gRPC services and their messages from `proto/service.proto` with a
//! vendored `protoc`; engine and placement driver types are reused, not copied. etcd's
//! v3 API from `proto/etcd`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Failures travel packed in a google.rpc.Status as `Any`s, which name their type.
    config.enable_type_names().type_name_domain(["."], "type.googleapis.com");
    tonic_prost_build::configure()
        .extern_path(".tessera.metadata", "::tessera_engine::proto::metadata")
        .extern_path(".tessera.command", "::tessera_engine::proto::command")
        .extern_path(".tessera.frame", "::tessera_engine::proto::frame")
        .extern_path(".tessera.mvcc", "::tessera_engine::proto::mvcc")
        .extern_path(".tessera.raft", "::tessera_engine::raft::proto")
        .extern_path(".tessera.pd", "::tessera_placement::proto")
        .compile_with_config(
            config,
            &["proto/service.proto"],
            &["proto", "../engine/proto", "../placement/proto"],
        )?;
    // etcd's v3 API (`proto/etcd`, the project's own definitions of etcd's interface):
    // servers for the stores, clients for the tests.
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &["proto/etcd/rpc.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
