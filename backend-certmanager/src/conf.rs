//! `conf` of a certmanager backend, and its decoder.

use std::sync::Arc;

use ca_core::config::{BackendConfig, Fields};
use ca_core::{CommonNameTemplate, DataSource, IssuerRef, Upstream, Violations};

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

impl CertmanagerConf {
    /// Decodes `conf` (`issuerRef`, `commonName`, `caCert`, `dnsNames`, `autoApprove`),
    /// reporting every violation into `v` at Kong Mesh's field paths.
    pub fn decode(f: Fields<'_>, v: &mut Violations) -> Option<Arc<Self>> {
        decode(f, v).map(Arc::new)
    }
}

impl BackendConfig for CertmanagerConf {
    fn data_sources(&self) -> Vec<(&'static str, &DataSource)> {
        self.ca_cert.iter().map(|ca| ("caCert", ca)).collect()
    }

    fn upstreams(&self) -> Vec<Upstream> {
        vec![Upstream::Certmanager(IssuerRef {
            kind: self.issuer_kind.clone(),
            group: self.issuer_group.clone(),
            name: self.issuer_name.clone(),
        })]
    }

    fn common_name(&self) -> Option<&CommonNameTemplate> {
        self.common_name.as_ref()
    }

    fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    fn remote_warnings(&self, at: &str) -> Vec<String> {
        if self.auto_approve {
            vec![format!(
                "{at}.conf.autoApprove: not honoured for a Mesh sent over the network; its CertificateRequests wait for cert-manager's approver"
            )]
        } else {
            Vec::new()
        }
    }
}

fn decode(mut f: Fields<'_>, v: &mut Violations) -> Option<CertmanagerConf> {
    let mut issuer = None;
    match f.obj("issuerRef", v) {
        Some(mut r) => {
            let name = r.required_str("name", v);
            let kind = r
                .str("kind", v)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "Issuer".into());
            let group = r
                .str("group", v)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "cert-manager.io".into());
            r.finish(v);
            issuer = name.map(|n| (n, kind, group));
        }
        None => {
            if !f.has("issuerRef") {
                v.add(f.at("issuerRef"), "has to be defined");
            }
        }
    }
    let common_name = f.common_name(v);
    let ca_cert = if f.has("caCert") {
        f.data_source("caCert", v)
    } else {
        None
    };
    let auto_approve = f.bool("autoApprove", v).unwrap_or(false);
    let dns_names = f.dns_name_list("dnsNames", v);
    f.finish(v);
    let (issuer_name, issuer_kind, issuer_group) = issuer?;
    Some(CertmanagerConf {
        issuer_name,
        issuer_kind,
        issuer_group,
        common_name,
        ca_cert,
        dns_names,
        auto_approve,
    })
}
