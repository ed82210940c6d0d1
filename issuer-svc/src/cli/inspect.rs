//! `meshca inspect`: a readable summary of certificates.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::error::X509Error;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::api::wire::unix;
use crate::files::IoError;
use crate::hash::sha256_hex;

/// Why `meshca inspect` fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum InspectError {
    /// The file cannot be read.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Not PEM certificates (ca-core's reason).
    #[error("{} {reason}", path.display())]
    Certificates { path: PathBuf, reason: String },
    /// No certificate to check against `--bundle`.
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    /// The first certificate does not chain to `--bundle`.
    #[error("{} does not chain to {}", file.display(), bundle.display())]
    NoChain { file: PathBuf, bundle: PathBuf },
    /// A certificate that cannot be parsed.
    #[error("not an X.509 certificate")]
    NotX509(#[source] x509_parser::nom::Err<X509Error>),
}

/// Prints a summary of every certificate in `file`; with `bundle`, whether the first chains to it.
pub(crate) fn inspect(file: &Path, bundle: Option<&Path>) -> Result<(), InspectError> {
    let certs = read_any(file)?;
    let n = certs.len();
    for (i, der) in certs.iter().enumerate() {
        if n > 1 {
            println!("certificate {} of {n}", i + 1);
        }
        print!("{}", summarize(der)?);
    }
    if let Some(b) = bundle {
        let roots = read_any(b)?;
        let (leaf, rest) = certs
            .split_first()
            .ok_or_else(|| InspectError::NoCertificate {
                path: file.to_owned(),
            })?;
        let usages = chains_to(leaf, rest, &roots);
        if usages.is_empty() {
            println!("chains to {}: NO", b.display());
            return Err(InspectError::NoChain {
                file: file.to_owned(),
                bundle: b.to_owned(),
            });
        }
        println!("chains to {}: yes ({})", b.display(), usages.join(", "));
    }
    Ok(())
}

fn read_any(path: &Path) -> Result<Vec<CertificateDer<'static>>, InspectError> {
    let bytes = std::fs::read(path).map_err(IoError::at("read", path))?;
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateDer::from(bytes)]);
    }
    ca_core::x509::parse_pem_certs(&bytes).map_err(|reason| InspectError::Certificates {
        path: path.to_owned(),
        reason,
    })
}

/// The usages (`client auth`, `server auth`) for which `leaf` chains to `roots` now.
pub(crate) fn chains_to(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
) -> Vec<&'static str> {
    let anchors: Vec<_> = roots
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return Vec::new();
    };
    let now = UnixTime::since_unix_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let mut out = Vec::new();
    for (name, usage) in [
        ("client auth", webpki::KeyUsage::client_auth()),
        ("server auth", webpki::KeyUsage::server_auth()),
    ] {
        if ee
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                intermediates,
                now,
                usage,
                None,
                None,
            )
            .is_ok()
        {
            out.push(name);
        }
    }
    out
}

fn summarize(der: &CertificateDer<'_>) -> Result<String, InspectError> {
    let (_, c) = X509Certificate::from_der(der).map_err(InspectError::NotX509)?;
    let sans = ca_core::x509::describe_sans(der).unwrap_or_default();
    let key = match c.public_key().parsed() {
        Ok(PublicKey::EC(p)) => format!("EC ({} bits)", p.key_size()),
        Ok(PublicKey::RSA(r)) => format!("RSA-{}", r.key_size()),
        _ => ca_core::KeyType::of_spki(c.public_key().raw)
            .map_or_else(|e| e.to_string(), |k| k.to_string()),
    };
    let key = ca_core::KeyType::of_spki(c.public_key().raw).map_or(key, |k| k.to_string());
    let nb = c.validity().not_before.timestamp();
    let na = c.validity().not_after.timestamp();
    let now = unix(SystemTime::now());
    let left = if na < now {
        format!("EXPIRED {} ago", human(now - na))
    } else if nb > now {
        format!("not valid for another {}", human(nb - now))
    } else {
        format!("{} left", human(na - now))
    };
    let fp = sha256_hex(der)
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8_lossy(p).to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let subject = c.subject().to_string();
    Ok(format!(
        "  subject:     {}\n  SANs:        {}\n  issuer:      {}\n  serial:      {}\n  not before:  {}\n  not after:   {} ({left})\n  key:         {key}\n  CA:          {}\n  SHA-256:     {fp}\n",
        if subject.is_empty() { "(empty)".into() } else { subject },
        if sans.is_empty() { "(none)".into() } else { sans.join(", ") },
        c.issuer(),
        c.raw_serial_as_string(),
        fmt_time(nb),
        fmt_time(na),
        if c.is_ca() { "yes" } else { "no" },
    ))
}

/// `2026-11-23 16:00:00 UTC`.
pub(crate) fn fmt_time(unix_secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix_secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix_secs.to_string(),
    }
}

fn human(secs: i64) -> String {
    let (d, h, m, s) = (
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}
