//! The service's own credentials: a bootstrap CA in the data directory, a server certificate for
//! localhost, and an admin client certificate the CLI uses by default. Created once, on the first
//! `serve` with no TLS settings; keys are 0600.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::util::{AppError, Context};

/// The common name of the bootstrap admin client certificate; it may do everything.
pub(crate) const ADMIN_CN: &str = "meshca-admin";

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
            dir,
        }
    }

    /// Creates whatever is missing. An existing CA is never replaced; the server and admin
    /// certificates are re-made from it when they are missing or expire within a day.
    pub(crate) fn ensure(&self) -> Result<(), AppError> {
        fs::create_dir_all(&self.dir).ctx(|| format!("cannot create {}", self.dir.display()))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .ctx(|| format!("cannot restrict {}", self.dir.display()))?;
        if !self.ca.exists() || !self.ca_key.exists() {
            let key = KeyPair::generate().ctx(|| "cannot generate a key".into())?;
            let mut params = CertificateParams::default();
            params.distinguished_name = dn("meshca bootstrap CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            validity(&mut params, Duration::from_secs(10 * 365 * 86400));
            let cert = params
                .self_signed(&key)
                .ctx(|| "cannot sign the bootstrap CA".into())?;
            write_private(&self.ca_key, key.serialize_pem().as_bytes())?;
            write_public(&self.ca, cert.pem().as_bytes())?;
        }
        let ca_pem =
            fs::read_to_string(&self.ca).ctx(|| format!("cannot read {}", self.ca.display()))?;
        let ca_key_pem = fs::read_to_string(&self.ca_key)
            .ctx(|| format!("cannot read {}", self.ca_key.display()))?;
        let ca_key = KeyPair::from_pem(&ca_key_pem)
            .ctx(|| format!("{} is not a usable key", self.ca_key.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
            .ctx(|| format!("{} is not a usable CA", self.ca.display()))?;

        if needs_renewal(&self.server) || !self.server_key.exists() {
            let mut params = CertificateParams::default();
            params.distinguished_name = dn("meshca issuer");
            params.subject_alt_names = vec![
                SanType::DnsName("localhost".try_into().ctx(|| "bad SAN".into())?),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            self.leaf(params, &issuer, &self.server, &self.server_key)?;
        }
        if needs_renewal(&self.admin) || !self.admin_key.exists() {
            let mut params = CertificateParams::default();
            params.distinguished_name = dn(ADMIN_CN);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            self.leaf(params, &issuer, &self.admin, &self.admin_key)?;
        }
        Ok(())
    }

    fn leaf(
        &self,
        mut params: CertificateParams,
        issuer: &Issuer<'_, KeyPair>,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<(), AppError> {
        let key = KeyPair::generate().ctx(|| "cannot generate a key".into())?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(ca_core::x509::random_serial());
        validity(&mut params, Duration::from_secs(365 * 86400));
        let cert = params
            .signed_by(&key, issuer)
            .ctx(|| format!("cannot sign {}", cert_path.display()))?;
        write_private(key_path, key.serialize_pem().as_bytes())?;
        write_public(cert_path, cert.pem().as_bytes())
    }
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

fn needs_renewal(cert: &Path) -> bool {
    let Ok(pem) = fs::read(cert) else { return true };
    let Ok(certs) = ca_core::x509::parse_pem_certs(&pem) else {
        return true;
    };
    let Some(first) = certs.first() else {
        return true;
    };
    match x509_parser::parse_x509_certificate(first) {
        Ok((_, c)) => {
            let left = c.validity().not_after.timestamp()
                - time::OffsetDateTime::now_utc().unix_timestamp();
            left < 86400
        }
        Err(_) => true,
    }
}

/// Writes a key file readable by the owner only (created 0600, never widened).
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<(), AppError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .ctx(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .ctx(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).ctx(|| format!("cannot write {}", path.display()))
}

/// Writes a certificate file (0644).
pub(crate) fn write_public(path: &Path, data: &[u8]) -> Result<(), AppError> {
    fs::write(path, data).ctx(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let paths = BootstrapPaths::new(dir.path());
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
    }
}
