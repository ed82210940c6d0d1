//! `conf` of an acmpca backend, and its decoder.

use std::sync::Arc;

use ca_core::config::{BackendConfig, Fields};
use ca_core::{CommonNameTemplate, DataSource, Upstream, Violations};

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

impl AcmpcaConf {
    /// Decodes `conf` (`arn`, `commonName`, `caCert`, `auth.awsCredentials`), reporting every
    /// violation into `v` at Kuma's field paths.
    pub fn decode(f: Fields<'_>, v: &mut Violations) -> Option<Arc<Self>> {
        decode(f, v).map(Arc::new)
    }
}

impl BackendConfig for AcmpcaConf {
    fn data_sources(&self) -> Vec<(&'static str, &DataSource)> {
        let mut s: Vec<(&'static str, &DataSource)> = Vec::new();
        if let Some(ca) = &self.ca_cert {
            s.push(("caCert", ca));
        }
        if let Some(creds) = &self.credentials {
            s.push(("auth.awsCredentials.accessKey", &creds.access_key));
            s.push((
                "auth.awsCredentials.accessKeySecret",
                &creds.access_key_secret,
            ));
        }
        s
    }

    fn upstreams(&self) -> Vec<Upstream> {
        vec![Upstream::Acmpca {
            arn: self.arn.clone(),
        }]
    }

    fn common_name(&self) -> Option<&CommonNameTemplate> {
        self.common_name.as_ref()
    }
}

fn decode(mut f: Fields<'_>, v: &mut Violations) -> Option<AcmpcaConf> {
    let arn_at = f.at("arn");
    let arn = f.required_str("arn", v);
    if let Some(a) = &arn {
        let parts: Vec<&str> = a.splitn(6, ':').collect();
        let ok = parts.len() == 6
            && parts[0] == "arn"
            && parts[1].starts_with("aws")
            && parts[2] == "acm-pca"
            && parts[5].starts_with("certificate-authority/");
        if !ok {
            v.add(&arn_at, format!("\"{a}\" is not an ACM PCA certificate authority ARN (arn:aws:acm-pca:<region>:<account>:certificate-authority/<id>)"));
        }
    }
    let common_name = f.common_name(v);
    // Optional in meshca: without it the bundle is GetCertificateAuthorityCertificate's.
    let ca_cert = if f.has("caCert") {
        f.data_source("caCert", v)
    } else {
        None
    };
    let mut credentials = None;
    if let Some(mut auth) = f.obj("auth", v) {
        if let Some(mut c) = auth.obj("awsCredentials", v) {
            let access_key = c.required_data_source("accessKey", v);
            let access_key_secret = c.required_data_source("accessKeySecret", v);
            c.finish(v);
            if let (Some(access_key), Some(access_key_secret)) = (access_key, access_key_secret) {
                credentials = Some(AwsCredentials {
                    access_key,
                    access_key_secret,
                });
            }
        }
        auth.finish(v);
    }
    f.finish(v);
    Some(AcmpcaConf {
        arn: arn?,
        common_name,
        ca_cert,
        credentials,
    })
}
