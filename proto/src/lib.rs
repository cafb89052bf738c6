//! Weir's gRPC contracts: the client API, package `weir.v1` (`proto/weir/v1/broker.proto`), and
//! the internal node-to-node replication API, package `weir.internal.v1`.
//!
//! This crate holds only the wire types: prost messages and the tonic client and server for the
//! `Broker` service ([`v1`]), the encoded descriptor set for server reflection
//! ([`FILE_DESCRIPTOR_SET`]), and the helpers that put Weir's machine-readable error reason into a
//! `tonic::Status` and read it back ([`error`]), and the conversions of ACL bindings between the
//! wire and `weir_types` ([`acl`]), and the framing of one gRPC message for the RPCs read and
//! written beside tonic ([`framing`]). It has no broker logic.
//!
//! The protos are compiled at build time by protox, a pure-Rust protobuf compiler, so building
//! needs no system `protoc`.

pub mod acl;
pub mod error;
pub mod framing;

/// Generated code for package `weir.v1`: messages, the `Acks` enum, `broker_client::BrokerClient`
/// and `broker_server::{Broker, BrokerServer}`.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
pub mod v1 {
    tonic::include_proto!("weir.v1");
}

/// Generated code for package `weir.internal.v1`: the node-to-node `Raft` service. Internal to
/// Weir brokers; clients never use it.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
pub mod internal {
    tonic::include_proto!("weir.internal.v1");
}

/// The encoded `google.protobuf.FileDescriptorSet` of every Weir proto, with source info, to
/// register with `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("weir_descriptor");

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn descriptor_set_describes_the_broker_service_with_comments() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)
            .expect("build.rs writes a valid encoded FileDescriptorSet");
        let file = set
            .file
            .iter()
            .find(|f| f.name() == "weir/v1/broker.proto")
            .expect("broker.proto is compiled");
        assert_eq!(file.package(), "weir.v1");
        let service = file
            .service
            .iter()
            .find(|s| s.name() == "Broker")
            .expect("broker.proto defines Broker");
        assert_eq!(
            format!("{}.{}", file.package(), service.name()),
            v1::broker_server::SERVICE_NAME
        );
        assert!(service.method.iter().any(|m| m.name() == "Produce"));
        // Reflection clients show comments only if source info was kept.
        assert!(file.source_code_info.is_some());
    }
}
