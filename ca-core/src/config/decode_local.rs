//! `conf` of the local backends, whose CA key meshca holds: builtin and provided.

use super::decode::{required_source, Fields};
use super::{BuiltinConf, ProvidedConf};
use crate::error::Violations;
use crate::x509::KeyType;

pub(super) fn decode_builtin(mut f: Fields<'_>, v: &mut Violations) -> Option<BuiltinConf> {
    let mut conf = BuiltinConf::default();
    let mut ok = true;
    if let Some(mut ca) = f.obj("caCert", v) {
        let bits_at = ca.at("RSAbits");
        let bits = ca.u32("RSAbits", v);
        if let Some(b) = bits {
            if ![2048, 3072, 4096].contains(&b) {
                v.add(
                    &bits_at,
                    format!("{b} is not supported: use 2048, 3072 or 4096"),
                );
                ok = false;
            }
        }
        let kt_at = ca.at("keyType");
        match ca.str("keyType", v).as_deref() {
            None => conf.ca_key = bits.map_or(KeyType::EcdsaP256, KeyType::Rsa),
            Some("ecdsa-p256") => {
                if bits.is_some() {
                    v.add(&bits_at, "applies only to keyType rsa");
                    ok = false;
                }
                conf.ca_key = KeyType::EcdsaP256;
            }
            Some("rsa") => conf.ca_key = KeyType::Rsa(bits.unwrap_or(2048)),
            Some(other) => {
                v.add(
                    &kt_at,
                    format!("\"{other}\" is not a key type (ecdsa-p256 or rsa)"),
                );
                ok = false;
            }
        }
        // Kuma accepts `0s`; the CA it makes is then refused when the backend is checked.
        if let Some(d) = ca.duration("expiration", v) {
            conf.ca_expiration = d.get();
        }
        ca.finish(v);
    }
    f.finish(v);
    ok.then_some(conf)
}

pub(super) fn decode_provided(mut f: Fields<'_>, v: &mut Violations) -> Option<ProvidedConf> {
    let cert = required_source(&mut f, "cert", v);
    let key = required_source(&mut f, "key", v);
    f.finish(v);
    Some(ProvidedConf {
        cert: cert?,
        key: key?,
    })
}
