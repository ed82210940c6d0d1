//! A test CA and a server certificate signed by it, for the peers that serve TLS of their own.

/// A server certificate (`dns_name` and 127.0.0.1, serverAuth), its key and the CA that signed
/// it.
pub(crate) struct ServerCert {
    pub(crate) ca: rcgen::Certificate,
    pub(crate) cert: rcgen::Certificate,
    pub(crate) key: rcgen::KeyPair,
}

/// Makes a CA named `ca_name` and a server certificate for `dns_name` (also its CN) and
/// 127.0.0.1, signed by it.
pub(crate) fn server_cert(ca_name: &str, dns_name: &str) -> ServerCert {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params =
        rcgen::CertificateParams::new(vec![dns_name.to_owned()]).expect("server params");
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::V4(
            std::net::Ipv4Addr::LOCALHOST,
        )));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, dns_name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    ServerCert { ca, cert, key }
}
