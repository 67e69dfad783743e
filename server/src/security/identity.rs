//! Who a peer is, from the certificate it showed at the handshake: a role and a name.
//!
//! The role is the certificate subject's organizational unit (OU): `node` for stores
//! and driver replicas, `admin` for operators at the command line, `client` for
//! applications. Any other certificate the CA signed (one from a company CA, with no
//! Tessera role in it) is a client: the least a signed certificate can be. The name is
//! the subject's common name (CN), which etcd's Auth takes as the user when a request
//! carries no token, as etcd does with client certificates.
//!
//! A certificate naming two different Tessera roles is refused: which one was meant
//! cannot be guessed, and guessing the larger would hand out privileges.

use x509_parser::prelude::{FromDer, X509Certificate};

/// What a peer may do; see [`super::policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A store or a driver replica: Raft traffic, registration, heartbeats, joining.
    Node,
    /// An operator: the client's calls and the cluster's administration.
    Admin,
    /// An application: reads, writes, transactions, watches, etcd's API.
    Client,
}

impl Role {
    /// The organizational unit that names the role in a certificate.
    pub fn unit(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Admin => "admin",
            Role::Client => "client",
        }
    }

    fn from_unit(unit: &str) -> Option<Role> {
        [Role::Node, Role::Admin, Role::Client].into_iter().find(|role| role.unit() == unit)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.unit())
    }
}

/// A peer known by its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub role: Role,
    /// The certificate's common name; empty if it has none.
    pub name: String,
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.role, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate does not parse: {reason}")]
    Unparsable { reason: String },
    #[error("the certificate names more than one role ({first} and {second})")]
    Ambiguous { first: Role, second: Role },
    #[error("the certificate's subject is not text")]
    NotText,
}

impl PeerIdentity {
    /// The identity a certificate (DER, already verified against the CA) gives.
    pub fn from_certificate(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
        let (_, certificate) = X509Certificate::from_der(der)
            .map_err(|error| IdentityError::Unparsable { reason: error.to_string() })?;
        let subject = certificate.subject();
        let mut role = None;
        for unit in subject.iter_organizational_unit() {
            let unit = unit.as_str().map_err(|_| IdentityError::NotText)?;
            let Some(named) = Role::from_unit(unit) else { continue };
            match role {
                Some(first) if first != named => {
                    return Err(IdentityError::Ambiguous { first, second: named });
                }
                _ => role = Some(named),
            }
        }
        let name = match subject.iter_common_name().next() {
            Some(name) => name.as_str().map_err(|_| IdentityError::NotText)?.to_string(),
            None => String::new(),
        };
        Ok(PeerIdentity { role: role.unwrap_or(Role::Client), name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::issue::{Authority, CertificateRequest};

    fn identity_of(
        role: Option<Role>,
        extra_units: &[&str],
        name: &str,
    ) -> Result<PeerIdentity, IdentityError> {
        let authority = Authority::generate("test CA").expect("a CA");
        let mut request = CertificateRequest::new(role.unwrap_or(Role::Client), name);
        request.omit_role = role.is_none();
        request.extra_units = extra_units.iter().map(ToString::to_string).collect();
        let issued = authority.issue(&request).expect("a certificate");
        PeerIdentity::from_certificate(issued.certificate_der())
    }

    #[test]
    fn the_role_is_the_organizational_unit_and_the_name_the_common_name() {
        let identity = identity_of(Some(Role::Node), &[], "store-7").expect("an identity");
        assert_eq!(identity, PeerIdentity { role: Role::Node, name: "store-7".into() });
        let identity = identity_of(Some(Role::Admin), &["operations"], "alice").expect("an identity");
        assert_eq!(identity, PeerIdentity { role: Role::Admin, name: "alice".into() });
    }

    #[test]
    fn a_certificate_without_a_tessera_role_is_a_client() {
        let identity = identity_of(None, &["payments"], "billing").expect("an identity");
        assert_eq!(identity, PeerIdentity { role: Role::Client, name: "billing".into() });
    }

    #[test]
    fn a_certificate_naming_two_roles_is_refused() {
        let error = identity_of(Some(Role::Client), &["node"], "sneaky").expect_err("ambiguous");
        assert_eq!(error, IdentityError::Ambiguous { first: Role::Client, second: Role::Node });
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            PeerIdentity::from_certificate(b"\x30\x03abc"),
            Err(IdentityError::Unparsable { .. })
        ));
    }
}
