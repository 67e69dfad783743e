//! A development certificate authority: a CA, and node, admin and client certificates
//! signed by it (`tessera cert`, `tessera playground --tls`, the tests).
//!
//! Production deployments bring their own CA; what they must put in a certificate is
//! what this module puts: the role as the subject's organizational unit and the name as
//! its common name ([`super::identity`]), the hosts a node is dialed at as subject
//! alternative names, and the key usages TLS checks (a node's certificate serves and
//! dials, so it is good for both server and client authentication; an admin's or a
//! client's only dials).

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::identity::Role;

/// How long a CA made here is valid.
const AUTHORITY_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// How long a certificate is valid by default.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// A certificate is valid from a little before it was made: clocks of the machines
/// that check it may be behind.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// The object identifier of an organizational unit, to put a second one in a subject
/// (rcgen keeps one value per attribute type otherwise).
const ORGANIZATIONAL_UNIT_OID: [u64; 4] = [2, 5, 4, 11];

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0:?} is not a host name or an IP address")]
    BadHost(String),
    #[error("the certificate would expire ({not_after:?}) before it is valid ({not_before:?})")]
    EmptyValidity { not_before: SystemTime, not_after: SystemTime },
}

/// A CA that signs certificates.
pub struct Authority {
    certificate_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// What a certificate is for.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    pub role: Role,
    /// The common name: a node's name in logs, an admin's or a client's user name.
    pub name: String,
    /// Host names and IP addresses a node is dialed at (subject alternative names).
    pub hosts: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Leaves the role out of the subject (a certificate from another CA, in tests).
    pub omit_role: bool,
    /// Further organizational units (tests of certificates that name several).
    pub extra_units: Vec<String>,
}

impl CertificateRequest {
    /// A certificate for `role` named `name`, valid from now for [`DEFAULT_VALIDITY`].
    pub fn new(role: Role, name: &str) -> CertificateRequest {
        let now = SystemTime::now();
        CertificateRequest {
            role,
            name: name.to_string(),
            hosts: Vec::new(),
            not_before: now - BACKDATE,
            not_after: now + DEFAULT_VALIDITY,
            omit_role: false,
            extra_units: Vec::new(),
        }
    }
}

/// A certificate and its private key, both PEM.
pub struct Issued {
    pub certificate_pem: String,
    pub key_pem: String,
    certificate_der: Vec<u8>,
}

impl Issued {
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }
}

impl Authority {
    /// A new CA named `name`.
    pub fn generate(name: &str) -> Result<Authority, IssueError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + AUTHORITY_VALIDITY).into();
        let certificate = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Authority { certificate_pem: certificate.pem(), key_pem, issuer: Issuer::new(params, key) })
    }

    /// The CA kept in `certificate_pem` and `key_pem` (as [`Authority::generate`] made it).
    pub fn load(certificate_pem: &str, key_pem: &str) -> Result<Authority, IssueError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(certificate_pem, key)?;
        Ok(Authority { certificate_pem: certificate_pem.to_string(), key_pem: key_pem.to_string(), issuer })
    }

    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate for `request`, with a key of its own, signed by this CA.
    pub fn issue(&self, request: &CertificateRequest) -> Result<Issued, IssueError> {
        if request.not_after <= request.not_before {
            return Err(IssueError::EmptyValidity {
                not_before: request.not_before,
                not_after: request.not_after,
            });
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for host in &request.hosts {
            params.subject_alt_names.push(subject_alternative_name(host)?);
        }
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, request.name.as_str());
        let mut units = request.extra_units.iter().map(String::as_str).collect::<Vec<_>>();
        if !request.omit_role {
            units.insert(0, request.role.unit());
        }
        for (index, unit) in units.into_iter().enumerate() {
            let attribute = match index {
                0 => DnType::OrganizationalUnitName,
                _ => DnType::CustomDnType(ORGANIZATIONAL_UNIT_OID.to_vec()),
            };
            params.distinguished_name.push(attribute, unit);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = match request.role {
            Role::Node => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Role::Admin | Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = request.not_before.into();
        params.not_after = request.not_after.into();
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            certificate_der: certificate.der().to_vec(),
        })
    }
}

fn subject_alternative_name(host: &str) -> Result<rcgen::SanType, IssueError> {
    if let Ok(address) = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
        return Ok(rcgen::SanType::IpAddress(address));
    }
    // The names a dialer accepts (`ServerName`): a certificate for any other could
    // never be verified.
    if rustls::pki_types::ServerName::try_from(host).is_err() {
        return Err(IssueError::BadHost(host.to_string()));
    }
    let name = host.to_string().try_into().map_err(|_| IssueError::BadHost(host.to_string()))?;
    Ok(rcgen::SanType::DnsName(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_authority_signs_like_the_one_that_was_generated() {
        let authority = Authority::generate("test CA").expect("a CA");
        let again = Authority::load(authority.certificate_pem(), authority.key_pem()).expect("loads");
        let issued = again.issue(&CertificateRequest::new(Role::Client, "alice")).expect("issued");
        assert!(issued.certificate_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn a_certificate_that_ends_before_it_starts_or_a_bad_host_is_refused() {
        let authority = Authority::generate("test CA").expect("a CA");
        let mut request = CertificateRequest::new(Role::Node, "store-1");
        request.not_after = request.not_before;
        assert!(matches!(authority.issue(&request), Err(IssueError::EmptyValidity { .. })));
        let mut request = CertificateRequest::new(Role::Node, "store-1");
        request.hosts = vec!["not a host".to_string()];
        assert!(matches!(authority.issue(&request), Err(IssueError::BadHost(_))));
    }
}
