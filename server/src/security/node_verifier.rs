//! Checking, when this process dials, that the server is a node: every server a Tessera
//! process dials (a store, a driver replica) holds a node certificate, so a server
//! showing another role's certificate is an impostor, even when the CA signed it and it
//! names the address (a client's certificate issued with hosts, or one from a shared
//! company CA). Without this check anyone holding such a certificate could stand in for
//! a store and be sent Raft traffic and writes.
//!
//! The chain, the name and the signatures are checked by rustls' own verifier first;
//! this only adds the role.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::identity::{PeerIdentity, Role};

/// rustls' verifier of the CA's chain and the server's name, and then the node role.
#[derive(Debug)]
pub(crate) struct NodeServerVerifier {
    chain_and_name: Arc<WebPkiServerVerifier>,
}

impl NodeServerVerifier {
    pub(crate) fn new(chain_and_name: Arc<WebPkiServerVerifier>) -> NodeServerVerifier {
        NodeServerVerifier { chain_and_name }
    }
}

/// Refuses a server whose certificate is not a node's.
fn require_node(end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    match PeerIdentity::from_certificate(end_entity) {
        Ok(identity) if identity.role == Role::Node => Ok(()),
        Ok(identity) => Err(rustls::Error::General(format!(
            "the server showed {identity}'s certificate, not a node's: Tessera's servers are nodes"
        ))),
        Err(error) => Err(rustls::Error::General(format!("the server's certificate: {error}"))),
    }
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.chain_and_name.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        require_node(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain_and_name.verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain_and_name.verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chain_and_name.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::issue::{Authority, CertificateRequest};

    fn certificate_of(role: Role) -> CertificateDer<'static> {
        let authority = Authority::generate("test CA").expect("a CA");
        let issued = authority.issue(&CertificateRequest::new(role, "someone")).expect("issued");
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).expect("PEM")
    }

    #[test]
    fn only_a_node_certificate_may_serve() {
        assert!(require_node(&certificate_of(Role::Node)).is_ok());
        for role in [Role::Admin, Role::Client] {
            let refused = require_node(&certificate_of(role)).expect_err("an impostor");
            assert!(refused.to_string().contains("not a node's"), "{refused}");
        }
        assert!(require_node(&CertificateDer::from(vec![1, 2, 3])).is_err(), "garbage");
    }
}
