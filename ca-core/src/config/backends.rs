//! The `conf` of each backend type.

use std::time::Duration;

use crate::datasource::DataSource;
use crate::template::CommonNameTemplate;
use crate::x509::KeyType;

use super::DEFAULT_CA_EXPIRATION;

/// `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendType {
    /// `builtin`.
    Builtin,
    /// `provided`.
    Provided,
    /// `vault`.
    Vault,
    /// `acmpca`.
    Acmpca,
    /// `certmanager`.
    Certmanager,
}

impl BackendType {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Builtin => "builtin",
            Self::Provided => "provided",
            Self::Vault => "vault",
            Self::Acmpca => "acmpca",
            Self::Certmanager => "certmanager",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "builtin" => Self::Builtin,
            "provided" => Self::Provided,
            "vault" => Self::Vault,
            "acmpca" => Self::Acmpca,
            "certmanager" => Self::Certmanager,
            _ => return None,
        })
    }
}

impl std::fmt::Display for BackendType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `conf`, by backend type.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum BackendConf {
    /// `type: builtin`.
    Builtin(BuiltinConf),
    /// `type: provided`.
    Provided(ProvidedConf),
    /// `type: vault`.
    Vault(VaultConf),
    /// `type: acmpca`.
    Acmpca(AcmpcaConf),
    /// `type: certmanager`.
    Certmanager(CertmanagerConf),
}

impl BackendConf {
    /// The type.
    pub fn backend_type(&self) -> BackendType {
        match self {
            Self::Builtin(_) => BackendType::Builtin,
            Self::Provided(_) => BackendType::Provided,
            Self::Vault(_) => BackendType::Vault,
            Self::Acmpca(_) => BackendType::Acmpca,
            Self::Certmanager(_) => BackendType::Certmanager,
        }
    }
}

/// `conf` of a builtin backend.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuiltinConf {
    /// The CA key: `caCert.keyType` (ECDSA P-256 by default) or RSA with `caCert.RSAbits`.
    pub ca_key: KeyType,
    /// `caCert.expiration` (default 10y).
    pub ca_expiration: Duration,
}

impl Default for BuiltinConf {
    fn default() -> Self {
        Self {
            ca_key: KeyType::EcdsaP256,
            ca_expiration: DEFAULT_CA_EXPIRATION,
        }
    }
}

/// `conf` of a provided backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProvidedConf {
    /// `cert`: the CA certificate, optionally followed by its parents.
    pub cert: DataSource,
    /// `key`: the CA's private key.
    pub key: DataSource,
}

/// `conf.fromCp` of a vault backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct VaultConf {
    /// `address`.
    pub address: String,
    /// `agentAddress`: a local Vault agent that authenticates for us.
    pub agent_address: Option<String>,
    /// `namespace` (Vault Enterprise).
    pub namespace: Option<String>,
    /// `pki`: the PKI secrets engine mount.
    pub pki: String,
    /// `role`.
    pub role: String,
    /// `mode` (meshca's extension): which PKI endpoint issues.
    pub mode: VaultMode,
    /// `commonName`.
    pub common_name: Option<CommonNameTemplate>,
    /// `tls.caCert`.
    pub tls_ca_cert: Option<DataSource>,
    /// `tls.skipVerify`.
    pub tls_skip_verify: bool,
    /// `tls.serverName`.
    pub tls_server_name: Option<String>,
    /// `auth`; `None` only with `agentAddress`.
    pub auth: Option<VaultAuth>,
}

/// `conf.fromCp.mode`: which endpoint of the PKI mount issues data plane certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VaultMode {
    /// `issue` (default, as Kong Mesh): `POST <pki>/issue/<role>`; Vault makes the key and it
    /// travels to the data plane through meshca.
    #[default]
    Issue,
    /// `sign`: `POST <pki>/sign/<role>` with the data plane's CSR; the key never leaves the data
    /// plane.
    Sign,
}

/// `conf.fromCp.auth`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum VaultAuth {
    /// `token`.
    Token(DataSource),
    /// `tls`: client certificate auth.
    Tls {
        /// `clientKey`.
        client_key: DataSource,
        /// `clientCert`.
        client_cert: DataSource,
    },
    /// `aws`.
    Aws {
        /// `type`.
        kind: AwsAuthType,
        /// `role`.
        role: Option<String>,
        /// `iamServerIdHeader`.
        iam_server_id_header: Option<String>,
    },
}

/// `auth.aws.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AwsAuthType {
    /// `IAM` (default).
    #[default]
    Iam,
    /// `EC2`.
    Ec2,
}

/// `conf` of an acmpca backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AcmpcaConf {
    /// `arn` of the private CA.
    pub arn: String,
    /// `commonName`.
    pub common_name: Option<CommonNameTemplate>,
    /// `caCert`: the root of the private CA's chain; `None` (a meshca extension) takes the
    /// bundle from `GetCertificateAuthorityCertificate`.
    pub ca_cert: Option<DataSource>,
    /// `auth.awsCredentials`; `None` uses the default AWS credential chain.
    pub credentials: Option<AwsCredentials>,
}

/// `auth.awsCredentials`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AwsCredentials {
    /// `accessKey`.
    pub access_key: DataSource,
    /// `accessKeySecret`.
    pub access_key_secret: DataSource,
}

/// `conf` of a certmanager backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CertmanagerConf {
    /// `issuerRef.name`.
    pub issuer_name: String,
    /// `issuerRef.kind` (default `Issuer`).
    pub issuer_kind: String,
    /// `issuerRef.group` (default `cert-manager.io`).
    pub issuer_group: String,
    /// `commonName`.
    pub common_name: Option<CommonNameTemplate>,
    /// `caCert`.
    pub ca_cert: Option<DataSource>,
    /// `dnsNames`.
    pub dns_names: Vec<String>,
    /// `autoApprove` (meshca's, not Kong Mesh's): meshca sets `Approved=True` on its own
    /// requests, for clusters without an approver. Default false.
    pub auto_approve: bool,
}
