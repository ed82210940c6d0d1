//! The acmpca backend against moto's ACM PCA with IAM auth enforced: a root CA per mesh, made
//! active the way AWS documents it (its CSR, signed by itself with the `RootCACertificate/V1`
//! template, imported), and an IAM user whose policy allows exactly the four actions meshca
//! needs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_sdk_acmpca::primitives::Blob;
use aws_sdk_acmpca::types::{
    Asn1Subject, CertificateAuthorityConfiguration, CertificateAuthorityType, KeyAlgorithm,
    SigningAlgorithm, Validity, ValidityPeriodType,
};
use backend_acmpca::{AcmpcaCa, Timing};
use ca_core::config::Mesh;
use ca_core::{BuildSpec, CertificateAuthority, Error, MeshName, OverlaySecretStore, SourcePolicy};
use meshca_peers::{AwsKey, Moto};

use crate::vault::indent;
use crate::Fixture;

/// The region CAs are made in unless a test says otherwise.
pub const REGION: &str = "us-east-1";

/// An AWS SDK config for `moto` in `region`, signing with `key` (none: no credentials at all).
pub fn moto_sdk(moto: &Moto, key: Option<&AwsKey>, region: &str) -> SdkConfig {
    sdk_for(&moto.endpoint(), key, region)
}

/// An AWS SDK config for `endpoint` in `region`, signing with `key` (none: no credentials).
pub fn sdk_for(endpoint: &str, key: Option<&AwsKey>, region: &str) -> SdkConfig {
    let mut b = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint);
    if let Some(k) = key {
        b = b.credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            k.access_key_id.clone(),
            k.secret_access_key.clone(),
            None,
            None,
            "moto",
        )));
    }
    b.build()
}

/// An IAM policy allowing `actions` on every CA.
pub fn policy(actions: &[&str]) -> String {
    let list: Vec<String> = actions.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":[{}],"Resource":"*"}}]}}"#,
        list.join(",")
    )
}

/// A private CA in moto.
#[derive(Clone, Debug)]
pub struct Ca {
    /// Its ARN.
    pub arn: String,
    /// Its root certificate (PEM); empty for a CA left `PENDING_CERTIFICATE`.
    pub root_pem: String,
}

/// moto, its admin, and a least-privilege IAM user for meshca.
pub struct Peer {
    /// moto, IAM enforced.
    pub moto: Moto,
    /// The user meshca signs as: a policy of exactly [`backend_acmpca::ACTIONS`].
    pub user: AwsKey,
    cas: tokio::sync::Mutex<HashMap<String, Ca>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("moto", &self.moto.endpoint())
            .finish()
    }
}

impl Peer {
    /// Starts moto and creates the meshca user.
    pub async fn start() -> Arc<Peer> {
        let moto = Moto::start().await;
        let user = moto
            .create_user_with_key("meshca-cp", Some(&policy(&backend_acmpca::ACTIONS)))
            .await;
        Arc::new(Peer {
            moto,
            user,
            cas: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// An SDK config for moto in `region` signing with `key` (none: no credentials at all).
    pub fn sdk(&self, key: Option<&AwsKey>, region: &str) -> SdkConfig {
        moto_sdk(&self.moto, key, region)
    }

    /// An SDK config for `endpoint` (moto, or a [`meshca_peers::FaultProxy`] in front of it) in
    /// `region` signing with `key`.
    pub fn sdk_at(endpoint: &str, key: Option<&AwsKey>, region: &str) -> SdkConfig {
        sdk_for(endpoint, key, region)
    }

    /// An ACM PCA client of the admin in `region`.
    pub fn admin(&self, region: &str) -> aws_sdk_acmpca::Client {
        aws_sdk_acmpca::Client::new(&self.sdk(Some(self.moto.admin()), region))
    }

    /// Creates a root CA (EC P-256, subject CN `cn`) in `region`; `activate` installs its
    /// certificate (else it stays `PENDING_CERTIFICATE`).
    pub async fn create_ca(&self, region: &str, cn: &str, activate: bool) -> Ca {
        let admin = self.admin(region);
        let conf = CertificateAuthorityConfiguration::builder()
            .key_algorithm(KeyAlgorithm::from("EC_prime256v1"))
            .signing_algorithm(SigningAlgorithm::from("SHA256WITHECDSA"))
            .subject(Asn1Subject::builder().common_name(cn).build())
            .build()
            .unwrap();
        let arn = admin
            .create_certificate_authority()
            .certificate_authority_configuration(conf)
            .certificate_authority_type(CertificateAuthorityType::from("ROOT"))
            .send()
            .await
            .unwrap()
            .certificate_authority_arn()
            .unwrap()
            .to_owned();
        if !activate {
            return Ca {
                arn,
                root_pem: String::new(),
            };
        }
        let csr = admin
            .get_certificate_authority_csr()
            .certificate_authority_arn(&arn)
            .send()
            .await
            .unwrap()
            .csr()
            .unwrap()
            .to_owned();
        let cert_arn = admin
            .issue_certificate()
            .certificate_authority_arn(&arn)
            .csr(Blob::new(csr.into_bytes()))
            .signing_algorithm(SigningAlgorithm::from("SHA256WITHECDSA"))
            .template_arn("arn:aws:acm-pca:::template/RootCACertificate/V1")
            .validity(
                Validity::builder()
                    .r#type(ValidityPeriodType::from("YEARS"))
                    .value(10)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap()
            .certificate_arn()
            .unwrap()
            .to_owned();
        let root_pem = admin
            .get_certificate()
            .certificate_authority_arn(&arn)
            .certificate_arn(&cert_arn)
            .send()
            .await
            .unwrap()
            .certificate()
            .unwrap()
            .to_owned();
        admin
            .import_certificate_authority_certificate()
            .certificate_authority_arn(&arn)
            .certificate(Blob::new(root_pem.clone().into_bytes()))
            .send()
            .await
            .unwrap();
        Ca { arn, root_pem }
    }

    /// The active CA of `mesh` (one per mesh, made on first use).
    pub async fn ca_for(&self, mesh: &str) -> Ca {
        let mut cas = self.cas.lock().await;
        if let Some(ca) = cas.get(mesh) {
            return ca.clone();
        }
        let ca = self
            .create_ca(REGION, &format!("{mesh} mesh root"), true)
            .await;
        cas.insert(mesh.to_owned(), ca.clone());
        ca
    }

    /// Mesh YAML with one acmpca backend; `extra` goes into `conf` (8 spaces).
    pub fn mesh_yaml(mesh: &str, arn: &str, ca_pem: &str, extra: &str) -> String {
        format!(
            "type: Mesh\nname: {mesh}\nmtls:\n  enabledBackend: acmpca-1\n  backends:\n  - name: acmpca-1\n    type: acmpca\n    dpCert:\n      rotation:\n        expiration: 24h\n      requestTimeout: 10s\n    conf:\n      arn: {arn}\n      caCert:\n        inlineString: |\n{}{extra}",
            indent(ca_pem, 10),
        )
    }

    /// The backend of `yaml` (24 h certificates) signing as `key` against this moto (no
    /// credentials at all with `None`, unless the YAML has `auth.awsCredentials`).
    pub async fn backend(&self, yaml: &str, key: Option<&AwsKey>) -> AcmpcaCa {
        Self::build(
            yaml,
            ca_core::config::DEFAULT_DP_CERT_EXPIRATION,
            self.sdk(key, REGION),
        )
        .await
        .unwrap_or_else(|e| panic!("building the acmpca backend: {}", ca_core::error_chain(&e)))
    }

    /// Builds the backend from `yaml` as the registry does, with `sdk` for endpoint (and
    /// credentials, unless the YAML has `auth.awsCredentials`).
    pub async fn build(yaml: &str, lifetime: Duration, sdk: SdkConfig) -> Result<AcmpcaCa, Error> {
        Self::build_with(yaml, lifetime, Some(sdk), &SourcePolicy::local()).await
    }

    /// [`build`](Self::build) with data sources resolved under `sources`; without `sdk` the
    /// backend loads the default AWS config (credential chain, `AWS_ENDPOINT_URL_ACM_PCA`).
    pub async fn build_with(
        yaml: &str,
        lifetime: Duration,
        sdk: Option<SdkConfig>,
        sources: &SourcePolicy,
    ) -> Result<AcmpcaCa, Error> {
        let mesh = Mesh::from_yaml(yaml, &crate::all_backends())?;
        let backend = mesh.enabled_backend().expect("enabled backend");
        let conf: &backend_acmpca::AcmpcaConf = backend.conf_as()?;
        let spec = BuildSpec::from_parts(
            "mtls.backends[0].conf",
            &mesh.name,
            &backend.name,
            Timing::new(
                backend.dp_cert_request_timeout,
                Duration::from_secs(10),
                lifetime,
            ),
            Arc::new(OverlaySecretStore::new(None)),
            sources,
        );
        let ca = AcmpcaCa::load_at(&spec, conf).await?;
        Ok(match sdk {
            Some(sdk) => ca.with_aws_sdk_config(sdk),
            None => ca,
        })
    }
}

/// The acmpca backend in the conformance suite: one moto, one CA per mesh, the least-privilege
/// user's keys.
#[derive(Debug, Default)]
pub struct Acmpca {
    peer: tokio::sync::OnceCell<Arc<Peer>>,
}

impl Acmpca {
    /// A fixture that starts moto on first use.
    pub fn new() -> Self {
        Self::default()
    }

    async fn peer(&self) -> &Arc<Peer> {
        self.peer.get_or_init(Peer::start).await
    }
}

#[async_trait]
impl Fixture for Acmpca {
    fn name(&self) -> &'static str {
        "acmpca (moto)"
    }

    async fn backend(&self, mesh: &MeshName, lifetime: Duration) -> Arc<dyn CertificateAuthority> {
        let peer = self.peer().await;
        let ca = peer.ca_for(mesh.as_str()).await;
        let yaml = Peer::mesh_yaml(mesh.as_str(), &ca.arn, &ca.root_pem, "");
        let sdk = peer.sdk(Some(&peer.user), REGION);
        Arc::new(Peer::build(&yaml, lifetime, sdk).await.unwrap())
    }

    async fn broken(
        &self,
        mesh: &MeshName,
    ) -> (Result<Arc<dyn CertificateAuthority>, Error>, &'static str) {
        // A CA whose certificate was never installed.
        let peer = self.peer().await;
        let good = peer.ca_for(mesh.as_str()).await;
        let pending = peer.create_ca(REGION, "pending", false).await;
        let yaml = Peer::mesh_yaml(mesh.as_str(), &pending.arn, &good.root_pem, "");
        let sdk = peer.sdk(Some(&peer.user), REGION);
        let ca = Peer::build(&yaml, Duration::from_secs(3600), sdk)
            .await
            .map(|c| Arc::new(c) as Arc<dyn CertificateAuthority>);
        (ca, "PENDING_CERTIFICATE")
    }

    fn honours_validity(&self) -> bool {
        // moto signs from now for 365 days whatever Validity / ValidityNotBefore say.
        false
    }

    fn csr_names_pass_through(&self) -> bool {
        true
    }
}
