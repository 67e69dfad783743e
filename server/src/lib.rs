//! Everything in Tessera that talks: the gRPC services for clients, stores and the
//! placement driver, the node-to-node transport, the client library and the `tessera`
//! binary.
//!
//! Not built yet (issue 5).
