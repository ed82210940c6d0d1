//! PKI: role checks (URI SAN globs, CN rules, TTL clamping, CA expiry), issue and sign.

use rcgen::PublicKeyData;
use serde_json::json;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::{err, vault_with_pki, Client};

#[tokio::test]
async fn issue_follows_role_rules() {
    let vault = vault_with_pki("2h").await;
    vault
        .write(
            "pki/roles/kuma-dp",
            json!({ "allowed_uri_sans": "spiffe://default/*,kuma://*", "require_cn": false,
                    "key_type": "ec", "ttl": "10m", "max_ttl": "1h" }),
        )
        .await;
    let c = Client::new(&vault, None);
    let root = vault.root_token();
    let t = Some(root.as_str());

    let (s, v) = c
        .call(
            "POST",
            "pki/issue/kuma-dp",
            t,
            None,
            Some(json!({ "uri_sans": ["spiffe://default/backend", "kuma://kuma.io/zone/east"] })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let d = &v["data"];
    let ca_pem = d["issuing_ca"].as_str().unwrap();
    assert_eq!(d["ca_chain"][0].as_str().unwrap(), ca_pem);
    assert!(d["private_key"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(d["private_key_type"], "ec");
    let leaf_pem = pem::parse(d["certificate"].as_str().unwrap()).unwrap();
    let (_, leaf) = X509Certificate::from_der(leaf_pem.contents()).unwrap();
    let ca_der = pem::parse(ca_pem).unwrap();
    let (_, ca) = X509Certificate::from_der(ca_der.contents()).unwrap();
    leaf.verify_signature(Some(ca.public_key())).unwrap();
    assert!(!leaf.is_ca());
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|g| g.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "URI(spiffe://default/backend)",
            "URI(kuma://kuma.io/zone/east)"
        ]
    );
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_encipherment());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let nb = leaf.validity().not_before.timestamp();
    assert!((now - 30 - nb).abs() <= 3, "not_before = now - 30s");
    let na = leaf.validity().not_after.timestamp();
    assert!((now + 600 - na).abs() <= 3, "role ttl 10m");
    assert_eq!(d["expiration"].as_i64().unwrap(), na);
    assert_eq!(
        d["serial_number"].as_str().unwrap(),
        leaf.raw_serial_as_string()
    );

    // PKCS#8 on request.
    let (s, v) = c
        .call(
            "POST",
            "pki/issue/kuma-dp",
            t,
            None,
            Some(json!({ "uri_sans": "spiffe://default/a", "private_key_format": "pkcs8" })),
        )
        .await;
    assert_eq!(s, 200);
    assert!(v["data"]["private_key"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));

    // URI SAN outside the globs.
    let (s, v) = c
        .call(
            "POST",
            "pki/issue/kuma-dp",
            t,
            None,
            Some(json!({ "uri_sans": "spiffe://other/backend" })),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        err(&v),
        "URI Subject Alternative Names were provided via the API which are not valid for this role"
    );

    // TTL above max_ttl is clamped with Vault's warning.
    let (s, v) = c
        .call(
            "POST",
            "pki/issue/kuma-dp",
            t,
            None,
            Some(json!({ "uri_sans": "spiffe://default/a", "ttl": "90m" })),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["warnings"][0],
        "TTL \"1h30m0s\" is longer than permitted maxTTL \"1h0m0s\", so maxTTL is being used"
    );
    assert!((v["data"]["expiration"].as_i64().unwrap() - (now + 3600)).abs() <= 3);

    // Unknown role.
    let (s, v) = c
        .call("POST", "pki/issue/nope", t, None, Some(json!({})))
        .await;
    assert_eq!((s, err(&v).as_str()), (400, "unknown role: nope"));

    // No URI SANs allowed at all.
    vault
        .write(
            "pki/roles/plain",
            json!({ "allowed_domains": "mesh.local", "allow_subdomains": true, "key_type": "rsa" }),
        )
        .await;
    let (s, v) = c
        .call(
            "POST",
            "pki/issue/plain",
            t,
            None,
            Some(json!({ "common_name": "a.mesh.local", "uri_sans": "spiffe://default/a" })),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        err(&v),
        "URI Subject Alternative Names are not allowed in this role, but were provided via the API"
    );

    // require_cn defaults to true.
    let (s, v) = c
        .call("POST", "pki/issue/plain", t, None, Some(json!({})))
        .await;
    assert_eq!(s, 400);
    assert_eq!(err(&v), "the common_name field is required, or must be provided in a CSR with \"use_csr_common_name\" set to true, unless \"require_cn\" is set to false");
    let (s, v) = c
        .call(
            "POST",
            "pki/issue/plain",
            t,
            None,
            Some(json!({ "common_name": "evil.example" })),
        )
        .await;
    assert_eq!(
        (s, err(&v).as_str()),
        (400, "common name evil.example not allowed by this role")
    );
    let (s, v) = c
        .call(
            "POST",
            "pki/issue/plain",
            t,
            None,
            Some(json!({ "common_name": "mesh.local" })),
        )
        .await;
    assert_eq!(
        (s, err(&v).as_str()),
        (400, "common name mesh.local not allowed by this role"),
        "bare domain needs allow_bare_domains"
    );
    let (s, v) = c
        .call(
            "POST",
            "pki/issue/plain",
            t,
            None,
            Some(
                json!({ "common_name": "a.mesh.local", "alt_names": "b.mesh.local", "ttl": "30m" }),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["data"]["private_key"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    let leaf_pem = pem::parse(v["data"]["certificate"].as_str().unwrap()).unwrap();
    let (_, leaf) = X509Certificate::from_der(leaf_pem.contents()).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|g| g.to_string())
        .collect();
    assert_eq!(names, ["DNSName(a.mesh.local)", "DNSName(b.mesh.local)"]);
    assert!(leaf.key_usage().unwrap().unwrap().value.key_encipherment());
    let (s, v) = c
        .call(
            "POST",
            "pki/issue/plain",
            t,
            None,
            Some(json!({ "common_name": "a.mesh.local", "alt_names": "x.other" })),
        )
        .await;
    assert_eq!(
        (s, err(&v).as_str()),
        (
            400,
            "subject alternate name x.other not allowed by this role"
        )
    );

    // Beyond the CA's notAfter (leaf_not_after_behavior=err).
    vault
        .write(
            "pki/roles/long",
            json!({ "allow_any_name": true, "max_ttl": "10h", "key_type": "ec" }),
        )
        .await;
    let (s, v) = c
        .call(
            "POST",
            "pki/issue/long",
            t,
            None,
            Some(json!({ "common_name": "x", "ttl": "5h" })),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        err(&v).starts_with("cannot satisfy request, as TTL would result in notAfter of "),
        "{v}"
    );
    assert!(err(&v).contains("that is beyond the expiration of the CA certificate at"));

    // CA reads.
    let (s, text) = c.raw("GET", "pki/ca/pem", None, None, None).await;
    assert_eq!(s, 200, "Vault serves the CA without a token: {text}");
    assert_eq!(text.trim(), ca_pem.trim());
    let (s, text) = c.raw("GET", "pki/ca_chain", t, None, None).await;
    assert_eq!((s, text.trim()), (200, ca_pem.trim()));
}

#[tokio::test]
async fn sign_uses_the_csr_key_and_checks_it() {
    let vault = vault_with_pki("2h").await;
    vault
        .write("pki/roles/kuma-dp", json!({ "allowed_uri_sans": ["spiffe://default/*"], "require_cn": false, "key_type": "ec", "max_ttl": "1h" }))
        .await;
    let c = Client::new(&vault, None);
    let root = vault.root_token();
    let t = Some(root.as_str());
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://default/web".try_into().unwrap(),
    )];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let (s, v) = c
        .call(
            "POST",
            "pki/sign/kuma-dp",
            t,
            None,
            Some(json!({ "csr": csr, "ttl": "20m" })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["data"].get("private_key").is_none());
    let leaf_pem = pem::parse(v["data"]["certificate"].as_str().unwrap()).unwrap();
    let (_, leaf) = X509Certificate::from_der(leaf_pem.contents()).unwrap();
    assert_eq!(
        leaf.public_key().raw,
        key.subject_public_key_info().as_slice()
    );
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|g| g.to_string())
        .collect();
    assert_eq!(names, ["URI(spiffe://default/web)"]);

    // A CSR asking for a URI outside the role (use_csr_sans defaults to true).
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI("spiffe://evil/web".try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let (s, v) = c
        .call(
            "POST",
            "pki/sign/kuma-dp",
            t,
            None,
            Some(json!({ "csr": csr })),
        )
        .await;
    assert_eq!(
        (s, err(&v).as_str()),
        (
            400,
            "URI Subject Alternative Names were provided via CSR which are not valid for this role"
        )
    );

    // A tampered CSR fails its signature check.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://default/web".try_into().unwrap(),
    )];
    let mut der = params.serialize_request(&key).unwrap().der().to_vec();
    let n = der.len();
    der[n - 5] ^= 0xff;
    let bad = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let (s, _) = c
        .call(
            "POST",
            "pki/sign/kuma-dp",
            t,
            None,
            Some(json!({ "csr": bad })),
        )
        .await;
    assert_eq!(s, 400);

    // An RSA CSR for an ec role.
    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&rsa)
        .unwrap()
        .pem()
        .unwrap();
    let (s, v) = c
        .call(
            "POST",
            "pki/sign/kuma-dp",
            t,
            None,
            Some(json!({ "csr": csr })),
        )
        .await;
    assert_eq!(
        (s, err(&v).as_str()),
        (400, "role requires keys of type ec")
    );
}
