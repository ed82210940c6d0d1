//! The service's own credentials: a bootstrap CA in the data directory, a server certificate for
//! localhost, and an admin client certificate the CLI uses by default. The CA is created once, on
//! the first `serve`; keys are 0600. The admin certificate is short-lived ([`ADMIN_LIFETIME`]): made
//! again at every start and by the running server once a third of its life has passed
//! ([`keep_admin_fresh`]), so a copy that leaks stops working within a day.
//!
//! Several issuers may start at once on one data directory: everything here runs under an
//! exclusive lock on `DATA_DIR/tls.lock`, and the first set is made in a temporary directory that
//! is renamed to `tls/` whole, so no process ever sees half a set. At every start the set on disk
//! is checked: a CA certificate that does not match its key is refused (never replaced); a server
//! or admin certificate that is missing, expiring, not signed by the CA or not matching its key is
//! made again from the CA.
//!
//! With `--store kubernetes` the CA pair comes from the store (one Secret all replicas share,
//! created if absent: see `serve`) and is *seeded* here ([`BootstrapPaths::ensure_seeded`]);
//! each replica makes its own server and admin certificates from it, so every replica trusts
//! every other's admin and presents a certificate clients verify with the same `ca.pem`.

use std::fs::{self, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ca_core::fsutil::FileError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls_pki_types::CertificateDer;
use x509_parser::error::X509Error;

use crate::files::{create_private_dir, write_private, write_public, IoError};

/// Why the bootstrap TLS set cannot be made or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BootstrapError {
    /// A file of the set (or its directory) cannot be written.
    #[error(transparent)]
    File(#[from] FileError),
    /// Creating, locking or restricting a directory failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A file of the CA pair cannot be read.
    #[error(
        "{} cannot be read; the bootstrap CA is incomplete. Restore it, or remove {} to make a new \
         bootstrap CA (every client certificate it signed stops working)",
        path.display(),
        dir.display()
    )]
    Incomplete {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The CA pair does not belong together.
    #[error(
        "{} does not match {}: the bootstrap CA on disk is inconsistent; meshca will not replace a \
         CA key. Restore the pair, or remove {} to make a new bootstrap CA",
        ca.display(),
        key.display(),
        dir.display()
    )]
    PairMismatch {
        ca: PathBuf,
        key: PathBuf,
        dir: PathBuf,
    },
    /// The data directory holds another CA than the shared store.
    #[error(
        "{} holds another bootstrap CA than the shared store; meshca will not replace a CA key. \
         Remove {} (it is a per-replica copy) and start again",
        ca.display(),
        dir.display()
    )]
    OtherCa { ca: PathBuf, dir: PathBuf },
    /// A CA kept in a store as one PEM text is not PEM.
    #[error("{at} is not PEM")]
    NotPem {
        at: String,
        #[source]
        source: pem::PemError,
    },
    /// A CA kept in a store does not hold exactly one certificate and one key.
    #[error("{at} must hold exactly one CERTIFICATE and one PRIVATE KEY block")]
    BundleShape { at: String },
    /// A CA kept in a store whose certificate is not for its key.
    #[error("{at}: the certificate does not match the key; meshca will not replace a CA key")]
    KeyMismatch { at: String },
    /// A CA certificate file holds no usable PEM certificate (ca-core's reason).
    #[error("{} {reason}", path.display())]
    Certificates { path: PathBuf, reason: String },
    /// A CA certificate file without a certificate.
    #[error("{} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    /// A certificate that cannot be parsed.
    #[error("{at} is not a certificate")]
    NotACertificate {
        at: String,
        #[source]
        source: x509_parser::nom::Err<X509Error>,
    },
    /// A key rcgen cannot use.
    #[error("{at} is not a usable key")]
    Key {
        at: String,
        #[source]
        source: rcgen::Error,
    },
    /// A CA rcgen cannot sign with.
    #[error("{} is not a usable CA", path.display())]
    Ca {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    /// A name for the server certificate that is not a DNS name.
    #[error("server certificate name {name:?} is not a DNS name (--server-name)")]
    DnsName {
        name: String,
        #[source]
        source: rcgen::Error,
    },
    /// Generating a key failed.
    #[error("cannot generate a key")]
    KeyGen(#[source] rcgen::Error),
    /// Signing a certificate failed.
    #[error("cannot sign {what}")]
    Sign {
        what: String,
        #[source]
        source: rcgen::Error,
    },
}

/// The common name of the bootstrap admin client certificate; it may do everything.
pub(crate) const ADMIN_CN: &str = "meshca-admin";

/// Lifetime of the bootstrap admin client certificate. It cannot be revoked: it expires.
pub(crate) const ADMIN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The running server makes the admin certificate again when less than this is left (after
/// 8 of its 24 hours), so a CLI reading it from the data directory always finds hours of validity.
const ADMIN_RENEW_BELOW: Duration = Duration::from_secs(16 * 3600);

/// How often the running server looks at the admin certificate.
const ADMIN_CHECK_INTERVAL: Duration = Duration::from_secs(600);

/// Lifetime of the bootstrap server certificate (re-made at a start within a day of its end).
const SERVER_LIFETIME: Duration = Duration::from_secs(365 * 86400);

/// Which leaves [`BootstrapPaths::renew_leaves`] looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Renew {
    /// At a start: the server certificate when needed, the admin certificate always.
    AtStart,
    /// While serving: the admin certificate when it is due.
    AdminIfDue,
}

/// Where the bootstrap credentials live under a data directory.
#[derive(Clone, Debug)]
pub(crate) struct BootstrapPaths {
    pub(crate) dir: PathBuf,
    pub(crate) ca: PathBuf,
    pub(crate) ca_key: PathBuf,
    pub(crate) server: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) admin: PathBuf,
    pub(crate) admin_key: PathBuf,
    /// Extra DNS names of the server certificate (`--server-name`).
    pub(crate) server_names: Vec<String>,
}

/// A bootstrap CA as PEM: the certificate and its key.
pub(crate) struct CaPem {
    pub(crate) cert: String,
    pub(crate) key: String,
}

impl std::fmt::Debug for CaPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaPem").finish_non_exhaustive()
    }
}

impl CaPem {
    /// A new bootstrap CA (P-256, ten years, path length 0).
    pub(crate) fn generate() -> Result<Self, BootstrapError> {
        let key = KeyPair::generate().map_err(BootstrapError::KeyGen)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("meshca bootstrap CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(rcgen::SerialNumber::from_slice(
            &ca_core::x509::random_serial(),
        ));
        validity(&mut params, Duration::from_secs(10 * 365 * 86400));
        let cert = params
            .self_signed(&key)
            .map_err(|source| BootstrapError::Sign {
                what: "the bootstrap CA".into(),
                source,
            })?;
        Ok(Self {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// Both as one PEM text (certificate first), as the Kubernetes store keeps them.
    pub(crate) fn to_bundle(&self) -> String {
        format!("{}{}", self.cert, self.key)
    }

    /// Reads [`to_bundle`](Self::to_bundle)'s text: one certificate and one private key that
    /// belong together.
    pub(crate) fn from_bundle(text: &[u8], what: &str) -> Result<Self, BootstrapError> {
        let blocks = pem::parse_many(text).map_err(|source| BootstrapError::NotPem {
            at: what.to_owned(),
            source,
        })?;
        let mut certs = blocks.iter().filter(|b| b.tag() == "CERTIFICATE");
        let mut keys = blocks.iter().filter(|b| b.tag() == "PRIVATE KEY");
        let (Some(cert), None, Some(key), None) =
            (certs.next(), certs.next(), keys.next(), keys.next())
        else {
            return Err(BootstrapError::BundleShape {
                at: what.to_owned(),
            });
        };
        let pair = Self {
            cert: pem::encode(cert),
            key: pem::encode(key),
        };
        let key = KeyPair::from_pem(&pair.key).map_err(|source| BootstrapError::Key {
            at: what.to_owned(),
            source,
        })?;
        let (_, c) = x509_parser::parse_x509_certificate(cert.contents()).map_err(|source| {
            BootstrapError::NotACertificate {
                at: what.to_owned(),
                source,
            }
        })?;
        if c.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(BootstrapError::KeyMismatch {
                at: what.to_owned(),
            });
        }
        Ok(pair)
    }
}

impl BootstrapPaths {
    pub(crate) fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join("tls");
        Self {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            admin: dir.join("admin.pem"),
            admin_key: dir.join("admin-key.pem"),
            server_names: Vec::new(),
            dir,
        }
    }

    /// With extra DNS names on the server certificate.
    pub(crate) fn with_server_names(mut self, names: Vec<String>) -> Self {
        self.server_names = names;
        self
    }

    /// Creates the set if there is none, checks it, and re-makes the server and admin
    /// certificates when needed. Returns the bootstrap CA certificate.
    pub(crate) fn ensure(&self) -> Result<CertificateDer<'static>, BootstrapError> {
        self.ensure_with(None)
    }

    /// [`ensure`](Self::ensure) with the CA pair given (from a shared store) instead of made
    /// here. A data directory holding another CA is refused, never overwritten.
    pub(crate) fn ensure_seeded(
        &self,
        ca: &CaPem,
    ) -> Result<CertificateDer<'static>, BootstrapError> {
        self.ensure_with(Some(Seed::Ca(ca)))
    }

    fn ensure_with(
        &self,
        seed: Option<Seed<'_>>,
    ) -> Result<CertificateDer<'static>, BootstrapError> {
        let parent = self.dir.parent().unwrap_or(Path::new("."));
        create_private_dir(parent)?;
        let lock_path = parent.join("tls.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(IoError::at("open", &lock_path))?;
        lock.lock().map_err(IoError::at("lock", &lock_path))?;
        let result = match seed {
            Some(Seed::Ca(ca)) => self.ensure_locked(parent, Some(ca)),
            None => self.ensure_locked(parent, None),
            Some(Seed::AdminOnly) => self.renew_leaves(Renew::AdminIfDue),
        };
        let _ = lock.unlock();
        result
    }

    /// Makes the admin certificate again if it is due (less than 16 of its 24 hours left,
    /// missing, or not matching the CA or its key), under the data directory's lock.
    pub(crate) fn renew_admin(&self) -> Result<(), BootstrapError> {
        self.ensure_with(Some(Seed::AdminOnly)).map(|_| ())
    }

    fn ensure_locked(
        &self,
        parent: &Path,
        seed: Option<&CaPem>,
    ) -> Result<CertificateDer<'static>, BootstrapError> {
        // Leftovers of a start that died half-way: never seen as a set, safe to remove.
        if let Ok(entries) = fs::read_dir(parent) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tls-") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        if !self.dir.exists() {
            let tmp = parent.join(format!(
                ".tls-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            create_private_dir(&tmp)?;
            let staged = Self::new_in(&tmp).with_server_names(self.server_names.clone());
            let ca = match seed {
                Some(ca) => CaPem {
                    cert: ca.cert.clone(),
                    key: ca.key.clone(),
                },
                None => CaPem::generate()?,
            };
            write_private(&staged.ca_key, ca.key.as_bytes())?;
            write_public(&staged.ca, ca.cert.as_bytes())?;
            staged.renew_leaves(Renew::AtStart)?;
            ca_core::fsutil::sync_dir(&tmp)?;
            fs::rename(&tmp, &self.dir).map_err(IoError::at("create", &self.dir))?;
            ca_core::fsutil::sync_dir(parent)?;
        }
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(IoError::at("restrict", &self.dir))?;
        if let Some(ca) = seed {
            let on_disk = fs::read(&self.ca).unwrap_or_default();
            let der = |pem: &[u8]| ca_core::x509::parse_pem_certs(pem).ok();
            if der(&on_disk) != der(ca.cert.as_bytes()) {
                return Err(BootstrapError::OtherCa {
                    ca: self.ca.clone(),
                    dir: self.dir.clone(),
                });
            }
        }
        self.renew_leaves(Renew::AtStart)
    }

    /// Paths as [`new`](Self::new) makes them, but directly in `dir`.
    fn new_in(dir: &Path) -> Self {
        let mut p = Self::new(dir);
        p.dir = dir.to_owned();
        p.ca = dir.join("ca.pem");
        p.ca_key = dir.join("ca-key.pem");
        p.server = dir.join("server.pem");
        p.server_key = dir.join("server-key.pem");
        p.admin = dir.join("admin.pem");
        p.admin_key = dir.join("admin-key.pem");
        p
    }

    /// Checks the CA pair (refusing a mismatch) and re-makes the server certificate when it is
    /// missing, expires within a day, is not signed by the CA or does not match its key; the
    /// admin certificate always at a start, else when it is due.
    fn renew_leaves(&self, what: Renew) -> Result<CertificateDer<'static>, BootstrapError> {
        let incomplete = |path: &Path| {
            let (path, dir) = (path.to_owned(), self.dir.clone());
            move |source| BootstrapError::Incomplete { path, dir, source }
        };
        let ca_pem = fs::read_to_string(&self.ca).map_err(incomplete(&self.ca))?;
        let ca_key_pem = fs::read_to_string(&self.ca_key).map_err(incomplete(&self.ca_key))?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|source| BootstrapError::Key {
            at: self.ca_key.display().to_string(),
            source,
        })?;
        let ca_der = ca_core::x509::parse_pem_certs(ca_pem.as_bytes())
            .map_err(|reason| BootstrapError::Certificates {
                path: self.ca.clone(),
                reason,
            })?
            .into_iter()
            .next()
            .ok_or_else(|| BootstrapError::NoCertificate {
                path: self.ca.clone(),
            })?;
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).map_err(|source| {
            BootstrapError::NotACertificate {
                at: self.ca.display().to_string(),
                source,
            }
        })?;
        if ca_cert.public_key().raw != ca_key.subject_public_key_info().as_slice() {
            return Err(BootstrapError::PairMismatch {
                ca: self.ca.clone(),
                key: self.ca_key.clone(),
                dir: self.dir.clone(),
            });
        }
        let issuer =
            Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|source| BootstrapError::Ca {
                path: self.ca.clone(),
                source,
            })?;

        let server_problem = match what {
            Renew::AtStart => leaf_problem(&self.server, &self.server_key, &ca_cert, DAY)
                .or_else(|| lacks_names(&self.server, &self.server_names)),
            Renew::AdminIfDue => None,
        };
        if let Some(why) = server_problem {
            if self.server.exists() {
                tracing::warn!(cert = %self.server.display(), reason = why, "re-making the server certificate");
            }
            let mut params = CertificateParams::default();
            params.distinguished_name = dn("meshca issuer");
            params.subject_alt_names = vec![
                SanType::DnsName(dns_name("localhost")?),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ];
            for name in &self.server_names {
                params
                    .subject_alt_names
                    .push(SanType::DnsName(dns_name(name)?));
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            self.leaf(
                params,
                &issuer,
                (&self.server, &self.server_key),
                SERVER_LIFETIME,
            )?;
        }
        let admin_problem = match what {
            Renew::AtStart => Some("made at every start"),
            Renew::AdminIfDue => {
                leaf_problem(&self.admin, &self.admin_key, &ca_cert, ADMIN_RENEW_BELOW)
            }
        };
        if let Some(why) = admin_problem {
            tracing::info!(cert = %self.admin.display(), reason = why, valid_for = ?ADMIN_LIFETIME, "making the admin client certificate");
            let mut params = CertificateParams::default();
            params.distinguished_name = dn(ADMIN_CN);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            self.leaf(
                params,
                &issuer,
                (&self.admin, &self.admin_key),
                ADMIN_LIFETIME,
            )?;
        }
        Ok(CertificateDer::from(ca_der.to_vec()))
    }

    fn leaf(
        &self,
        mut params: CertificateParams,
        issuer: &Issuer<'_, KeyPair>,
        (cert_path, key_path): (&Path, &Path),
        life: Duration,
    ) -> Result<(), BootstrapError> {
        let key = KeyPair::generate().map_err(BootstrapError::KeyGen)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(
            &ca_core::x509::random_serial(),
        ));
        validity(&mut params, life);
        let cert = params
            .signed_by(&key, issuer)
            .map_err(|source| BootstrapError::Sign {
                what: cert_path.display().to_string(),
                source,
            })?;
        write_private(key_path, key.serialize_pem().as_bytes())?;
        Ok(write_public(cert_path, cert.pem().as_bytes())?)
    }
}

/// What [`BootstrapPaths::ensure_with`] does under the lock besides the default (make or check
/// the whole set with a CA of its own).
#[derive(Clone, Copy, Debug)]
enum Seed<'a> {
    /// Make or check the set with this CA (from the shared store).
    Ca(&'a CaPem),
    /// Only renew the admin certificate if it is due.
    AdminOnly,
}

const DAY: Duration = Duration::from_secs(86400);

/// Keeps the admin client certificate in the data directory fresh while the server runs: every
/// ten minutes it is made again if less than 16 of its 24 hours are left. Older copies are not
/// revoked; they expire.
pub(crate) async fn keep_admin_fresh(paths: BootstrapPaths) {
    let mut tick = tokio::time::interval(ADMIN_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let p = paths.clone();
        match tokio::task::spawn_blocking(move || p.renew_admin()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %ca_core::error_chain(&e), "cannot renew the admin client certificate; will try again")
            }
            Err(_) => tracing::warn!("the admin certificate renewal stopped; will try again"),
        }
    }
}

/// `name` as a DNS SAN of the server certificate.
fn dns_name(name: &str) -> Result<rcgen::string::Ia5String, BootstrapError> {
    name.try_into().map_err(|source| BootstrapError::DnsName {
        name: name.to_owned(),
        source,
    })
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d
}

fn validity(params: &mut CertificateParams, life: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + life).into();
}

/// Why a leaf must be made again, or `None` when it is fine: missing, not signed by `ca`, not
/// matching its key, or with less than `renew_below` left.
fn leaf_problem(
    cert: &Path,
    key: &Path,
    ca: &x509_parser::certificate::X509Certificate<'_>,
    renew_below: Duration,
) -> Option<&'static str> {
    let Ok(pem) = fs::read(cert) else {
        return Some("missing");
    };
    let Some(first) = ca_core::x509::parse_pem_certs(&pem)
        .ok()
        .and_then(|c| c.into_iter().next())
    else {
        return Some("not a certificate");
    };
    let Ok((_, c)) = x509_parser::parse_x509_certificate(&first) else {
        return Some("not a certificate");
    };
    if c.verify_signature(Some(ca.public_key())).is_err() {
        return Some("not signed by the bootstrap CA");
    }
    let key_matches = fs::read_to_string(key)
        .ok()
        .and_then(|k| KeyPair::from_pem(&k).ok())
        .is_some_and(|k| k.subject_public_key_info().as_slice() == c.public_key().raw);
    if !key_matches {
        return Some("does not match its key");
    }
    let left =
        c.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp();
    let below = i64::try_from(renew_below.as_secs()).unwrap_or(i64::MAX);
    (left < below).then_some("expires soon")
}

/// `Some` when the certificate at `cert` lacks one of the DNS names in `wanted`.
fn lacks_names(cert: &Path, wanted: &[String]) -> Option<&'static str> {
    if wanted.is_empty() {
        return None;
    }
    let pem = fs::read(cert).ok()?;
    let der = ca_core::x509::parse_pem_certs(&pem)
        .ok()?
        .into_iter()
        .next()?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).ok()?;
    let have: Vec<String> = c
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    wanted
        .iter()
        .any(|w| !have.contains(w))
        .then_some("lacks a --server-name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let paths = BootstrapPaths::new(&data);
        paths.ensure().unwrap();
        let ca1 = fs::read(&paths.ca).unwrap();
        for key in [&paths.ca_key, &paths.server_key, &paths.admin_key] {
            assert_eq!(
                fs::metadata(key).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        paths.ensure().unwrap();
        assert_eq!(fs::read(&paths.ca).unwrap(), ca1, "CA is kept");
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn inconsistent_sets_are_refused_or_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let paths = BootstrapPaths::new(&data);
        paths.ensure().unwrap();
        let ca = fs::read(&paths.ca).unwrap();
        // A server certificate signed by another CA (what a start race used to leave): re-made.
        let other = tempfile::tempdir().unwrap();
        let other_paths = BootstrapPaths::new(other.path());
        other_paths.ensure().unwrap();
        fs::copy(&other_paths.server, &paths.server).unwrap();
        fs::copy(&other_paths.server_key, &paths.server_key).unwrap();
        fs::copy(&other_paths.admin_key, &paths.admin_key).unwrap();
        paths.ensure().unwrap();
        let ca_der = ca_core::x509::parse_pem_certs(&ca).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der[0]).unwrap();
        assert_eq!(
            leaf_problem(&paths.server, &paths.server_key, &ca_cert, DAY),
            None
        );
        assert_eq!(
            leaf_problem(&paths.admin, &paths.admin_key, &ca_cert, DAY),
            None
        );
        assert_eq!(fs::read(&paths.ca).unwrap(), ca, "CA is kept");
        // A CA key that does not match the CA certificate: refused, never replaced.
        fs::copy(&other_paths.ca_key, &paths.ca_key).unwrap();
        let err = ca_core::error_chain(&paths.ensure().unwrap_err());
        assert!(err.contains("does not match"), "{err}");
        assert_eq!(fs::read(&paths.ca).unwrap(), ca);
        // A missing CA certificate: refused with what to do.
        fs::remove_file(&paths.ca).unwrap();
        let err = ca_core::error_chain(&paths.ensure().unwrap_err());
        assert!(err.contains("the bootstrap CA is incomplete"), "{err}");
    }

    fn admin_life(paths: &BootstrapPaths) -> (i64, String) {
        let der = ca_core::x509::parse_pem_certs(&fs::read(&paths.admin).unwrap()).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&der[0]).unwrap();
        let v = c.validity();
        (
            v.not_after.timestamp() - v.not_before.timestamp(),
            c.raw_serial_as_string(),
        )
    }

    #[test]
    fn the_admin_certificate_is_short_lived_and_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = BootstrapPaths::new(dir.path());
        paths.ensure().unwrap();
        let (life, first) = admin_life(&paths);
        // 24 h plus the minute of clock skew allowed before now.
        assert_eq!(life, 24 * 3600 + 60);
        // Not due yet: kept.
        paths.renew_admin().unwrap();
        assert_eq!(admin_life(&paths).1, first);
        // Every start makes a new one.
        paths.ensure().unwrap();
        let (_, second) = admin_life(&paths);
        assert_ne!(second, first);
        // One with less than 16 hours left is made again by the running server.
        let ca_pem = fs::read_to_string(&paths.ca).unwrap();
        let ca_key = KeyPair::from_pem(&fs::read_to_string(&paths.ca_key).unwrap()).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(ADMIN_CN);
        paths
            .leaf(
                params,
                &issuer,
                (&paths.admin, &paths.admin_key),
                Duration::from_secs(15 * 3600),
            )
            .unwrap();
        let (_, short) = admin_life(&paths);
        paths.renew_admin().unwrap();
        let (life, renewed) = admin_life(&paths);
        assert_ne!(renewed, short);
        assert_eq!(life, 24 * 3600 + 60);
    }

    #[test]
    fn racing_creators_agree_on_one_set() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let paths = BootstrapPaths::new(dir.path());
            let cas: Vec<Vec<u8>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4)
                    .map(|_| {
                        let p = paths.clone();
                        s.spawn(move || {
                            let ca = p.ensure().unwrap();
                            ca.to_vec()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(cas.windows(2).all(|w| w[0] == w[1]));
            let (_, ca_cert) = x509_parser::parse_x509_certificate(&cas[0]).unwrap();
            assert_eq!(
                leaf_problem(&paths.server, &paths.server_key, &ca_cert, DAY),
                None
            );
        }
    }
}
