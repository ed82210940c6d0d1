//! The Kubernetes manifests in `deploy/kubernetes/`: every document parses strictly into the
//! k8s-openapi type its `kind` names (a misspelt field, which serde would silently drop, fails
//! with its path; an unknown kind fails), `kustomization.yaml` lists files that exist and leaves
//! out only the optional ClusterIssuer RBAC, the Roles grant exactly what the Kubernetes
//! SecretStore and the certmanager backend use, the RoleBindings give them to the ServiceAccount,
//! the Deployment's args agree with its volumes, ports and probes, the Service and the
//! PodDisruptionBudget select its pods, and the sample Mesh in the ConfigMap (and its
//! commented-out certmanager example) is valid.
//!
//! Ownership: the base declares only meshca's own namespace and puts everything there, except
//! the Role (and its binding) for the mesh Secrets in Kuma's namespace; every Secrets rule names
//! its Secrets (resourceNames) but the documented `create` exception; a NetworkPolicy selects
//! the pods, lets gRPC in from labelled clients only and the unauthenticated metrics port from
//! the monitoring namespace only, lets out only DNS and the API server's ports, and documents
//! what it assumes.
//!
//! Against the real schemas: every manifest validates with `kubernetes-validate --strict` (from
//! `$MESHCA_PYTHON`'s venv) for every Kubernetes version meshca supports, 1.33 (the k8s-openapi
//! feature) up to the newest the pinned kubernetes-validate knows; the optional ServiceMonitor
//! (`optional/`, a kustomize Component outside the base) validates against prometheus-operator's
//! CRD schema (vendored in `optional/upstream/`) and scrapes the Service's metrics port. The ports
//! stay clear of kuma-cp's 5676-5685.
//!
//! The Kubernetes mesh source (`kuma-meshes/`, a kustomize Component): applied to the base as
//! kustomize would (its strategic merge patches, here by a small merge of the same rules), the
//! Deployment runs `--mesh-source kubernetes` with no `--mesh-config`, no ConfigMap volume and
//! otherwise the base's args; the ConfigMap of Meshes is deleted; its RBAC grants exactly get,
//! list, watch on `meshes.kuma.io` and create on `events.k8s.io` events in `default`; and every
//! object validates with `kubernetes-validate --strict` for every supported version.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use ca_core::config::Mesh;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::serde::de::{Deserialize as _, DeserializeOwned};
use k8s_openapi::serde::Serialize;
use serde_json::Value;

/// meshca's own namespace: the only one the manifests declare.
const NAMESPACE: &str = "meshca-system";
/// Kuma's namespace: named only by the Role (and binding) for the mesh Secrets.
const KUMA_NAMESPACE: &str = "kuma-system";
const NAME: &str = "meshca";
/// The Role in Kuma's namespace.
const KUMA_ROLE: &str = "meshca-mesh-secrets";
const KUMA_FILE: &str = "22-rbac-kuma-secrets.yaml";
const MESH_CONFIGMAP: &str = "meshca-meshes";
const OPTIONAL_FILE: &str = "21-rbac-clusterissuer.yaml";
/// The label of namespaces and pods the NetworkPolicy lets reach gRPC.
const CLIENT_LABEL: &str = "meshca.io/client";
/// The kustomize Component with the optional ServiceMonitor.
const OPTIONAL_DIR: &str = "optional";
/// The kustomize Component for `--mesh-source kubernetes` (Kuma's Mesh objects, no ConfigMap).
const KUMA_MESHES_DIR: &str = "kuma-meshes";
/// meshca's own Secrets (`serve::BOOTSTRAP_SECRET`, `api::token::KEY_SECRET`).
const OWN_SECRETS: [&str; 2] = ["meshca-bootstrap-tls", "meshca-token-signing-key"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every object of every manifest (kustomization.yaml aside), by kind.
#[derive(Debug, Default)]
struct Manifests {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    config_maps: Vec<ConfigMap>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    pdbs: Vec<PodDisruptionBudget>,
    network_policies: Vec<NetworkPolicy>,
    /// File name → the kinds of its documents.
    kinds: BTreeMap<String, Vec<String>>,
    /// File name → the namespaces its objects name.
    namespaces_of: BTreeMap<String, BTreeSet<String>>,
}

/// Deserializes `doc` into `T`, then checks that every field of `doc` survives a round trip
/// through `T` with its value: serde ignores fields a type does not have, so a misspelt one
/// would otherwise vanish unnoticed.
fn strict<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, String> {
    let t: T = serde_json::from_value(doc.clone()).map_err(|e| format!("does not parse: {e}"))?;
    let back = serde_json::to_value(&t).map_err(|e| format!("does not serialize: {e}"))?;
    let mut problems = Vec::new();
    subset(doc, &back, "", &mut problems);
    if problems.is_empty() {
        Ok(t)
    } else {
        Err(problems.join("; "))
    }
}

/// Records in `out` every path of `orig` that is missing from `back` or has another value there.
fn subset(orig: &Value, back: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(bv) => subset(v, bv, &p, out),
                    None => out.push(format!("{p}: unknown field (the parse dropped it)")),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) if o.len() == b.len() => {
            for (i, (ov, bv)) in o.iter().zip(b).enumerate() {
                subset(ov, bv, &format!("{path}[{i}]"), out);
            }
        }
        (o, b) if o == b => {}
        (o, b) => out.push(format!("{path}: {o} became {b} in the parse")),
    }
}

/// Parses one document into the type its `kind` names.
fn parse_doc(doc: &Value, m: &mut Manifests) -> Result<String, String> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("has no kind")?
        .to_owned();
    match kind.as_str() {
        "Namespace" => m.namespaces.push(strict(doc)?),
        "ServiceAccount" => m.service_accounts.push(strict(doc)?),
        "Role" => m.roles.push(strict(doc)?),
        "RoleBinding" => m.role_bindings.push(strict(doc)?),
        "ClusterRole" => m.cluster_roles.push(strict(doc)?),
        "ClusterRoleBinding" => m.cluster_role_bindings.push(strict(doc)?),
        "ConfigMap" => m.config_maps.push(strict(doc)?),
        "Deployment" => m.deployments.push(strict(doc)?),
        "Service" => m.services.push(strict(doc)?),
        "PodDisruptionBudget" => m.pdbs.push(strict(doc)?),
        "NetworkPolicy" => m.network_policies.push(strict(doc)?),
        other => return Err(format!("unknown kind {other:?}")),
    }
    Ok(kind)
}

/// The non-empty documents of a YAML stream.
fn documents(text: &str) -> Result<Vec<Value>, String> {
    let docs = yaml_serde::Deserializer::from_str(text)
        .map(Value::deserialize)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not YAML: {e}"))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The manifest files: every `*.yaml` of deploy/kubernetes/ but kustomization.yaml, sorted.
/// Besides them the directory holds only its README.md and optional/ (checked by its own tests).
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir())
        .expect("deploy/kubernetes/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            !p.is_dir() || (file_name(p) != OPTIONAL_DIR && file_name(p) != KUMA_MESHES_DIR)
        })
        .filter(|p| file_name(p) != "README.md")
        .collect();
    files.sort();
    for f in &files {
        assert_eq!(
            f.extension().and_then(|e| e.to_str()),
            Some("yaml"),
            "{}: only *.yaml files belong in deploy/kubernetes/ (others are not checked)",
            f.display()
        );
    }
    files.retain(|f| file_name(f) != "kustomization.yaml");
    files
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Parses every manifest; panics with every failure found.
fn load() -> Manifests {
    let mut m = Manifests::default();
    let mut failures = Vec::new();
    for path in manifest_files() {
        let name = file_name(&path);
        let text = fs::read_to_string(&path).unwrap();
        let docs = match documents(&text) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let mut kinds = Vec::new();
        let mut namespaces = BTreeSet::new();
        for (i, doc) in docs.iter().enumerate() {
            match parse_doc(doc, &mut m) {
                Ok(kind) => kinds.push(kind),
                Err(e) => failures.push(format!("{name} (document {i}): {e}")),
            }
            if let Some(ns) = doc.pointer("/metadata/namespace").and_then(Value::as_str) {
                namespaces.insert(ns.to_owned());
            }
        }
        m.kinds.insert(name.clone(), kinds);
        m.namespaces_of.insert(name, namespaces);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    m
}

fn one<'a, T>(items: &'a [T], what: &str) -> &'a T {
    assert_eq!(items.len(), 1, "expected exactly one {what}");
    &items[0]
}

fn deployment(m: &Manifests) -> &Deployment {
    one(&m.deployments, "Deployment")
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .expect("pod spec")
}

fn container(d: &Deployment) -> &Container {
    let spec = pod_spec(d);
    one(&spec.containers, "container")
}

fn pod_labels(d: &Deployment) -> BTreeMap<String, String> {
    let t = &d.spec.as_ref().unwrap().template;
    t.metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// Whether the selector `sel` (non-empty) matches `labels`.
fn selects(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The values of `--name VALUE` / `--name=VALUE` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == name {
            out.push(
                it.next()
                    .unwrap_or_else(|| panic!("{name} has no value"))
                    .as_str(),
            );
        } else if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            out.push(v);
        }
    }
    out
}

fn single_flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let v = flag(args, name);
    assert_eq!(v.len(), 1, "{name} given {} times: {args:?}", v.len());
    v[0]
}

fn flag_port(args: &[String], name: &str) -> i32 {
    let addr: SocketAddr = single_flag(args, name).parse().unwrap();
    i32::from(addr.port())
}

/// The container port a probe / targetPort names: by number or by port name.
fn container_port(c: &Container, port: &IntOrString) -> i32 {
    match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("the container has no port named {name}"))
                .container_port
        }
    }
}

/// (apiGroup, resource, verb) → the resourceNames it is limited to (`None`: every name).
type Grants = BTreeMap<(String, String, String), Option<BTreeSet<String>>>;

/// What `rules` allow, verb by verb; a verb granted on every name by one rule and on some names
/// by another is granted on every name.
fn grants(rules: &[PolicyRule]) -> Grants {
    let mut out: Grants = BTreeMap::new();
    for r in rules {
        assert!(
            r.non_resource_urls.is_none(),
            "unexpected rule shape: {r:?}"
        );
        let names: Option<BTreeSet<String>> = r
            .resource_names
            .as_ref()
            .map(|n| n.iter().cloned().collect());
        if let Some(n) = &names {
            assert!(
                !n.is_empty(),
                "an empty resourceNames means every name: {r:?}"
            );
        }
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    let key = (g.clone(), res.clone(), v.clone());
                    let merged = match (out.remove(&key), &names) {
                        (None, n) => n.clone(),
                        (Some(None), _) | (_, None) => None,
                        (Some(Some(mut a)), Some(b)) => {
                            a.extend(b.iter().cloned());
                            Some(a)
                        }
                    };
                    out.insert(key, merged);
                }
            }
        }
    }
    out
}

/// (apiGroup, resource, verbs, names): every verb limited to `names` (empty: every name).
fn expected(items: &[(&str, &str, &[&str], &[&str])]) -> Grants {
    let mut out = Grants::new();
    for (g, r, verbs, names) in items {
        for v in *verbs {
            let n = (!names.is_empty()).then(|| names.iter().map(|n| (*n).to_owned()).collect());
            out.insert(((*g).to_owned(), (*r).to_owned(), (*v).to_owned()), n);
        }
    }
    out
}

fn role<'a>(m: &'a Manifests, name: &str) -> &'a Role {
    m.roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Role {name}"))
}

/// The names of every Secret the sample Meshes make meshca read in Kuma's namespace: each
/// builtin backend's CA certificate and key, and each mesh's CA-switch record.
fn sample_mesh_secrets(m: &Manifests) -> BTreeSet<String> {
    let cm = m
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(MESH_CONFIGMAP))
        .expect("the Mesh ConfigMap");
    let mut out = BTreeSet::new();
    for text in cm.data.as_ref().expect("data").values() {
        let mesh = Mesh::from_yaml(text, &meshca_tests::all_backends()).unwrap();
        out.insert(format!("{}.meshca-ca-switch", mesh.name));
        for b in &mesh.mtls.as_ref().unwrap().backends {
            if b.backend_type() == "builtin" {
                let (cert, key) =
                    backend_builtin::BuiltinCa::secret_names(&mesh.name, &b.name).unwrap();
                out.insert(cert.to_string());
                out.insert(key.to_string());
            }
        }
    }
    out
}

/// Whether `peer` lets in everyone (of the cluster, or of the world).
fn open_peer(peer: &NetworkPolicyPeer) -> bool {
    let empty = |s: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| {
        s.as_ref().is_some_and(|s| {
            s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
        })
    };
    peer.ip_block
        .as_ref()
        .is_some_and(|b| b.cidr.ends_with("/0"))
        || (empty(&peer.namespace_selector)
            && (peer.pod_selector.is_none() || empty(&peer.pod_selector)))
}

/// `arg` with `$(VAR)` replaced as the kubelet does, for the variables of `c`'s `env` that come
/// from the pod's own namespace.
fn expand(arg: &str, c: &Container, namespace: &str) -> String {
    let mut out = arg.to_owned();
    for e in c.env.iter().flatten() {
        let from_ns = e
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .is_some_and(|f| f.field_path == "metadata.namespace");
        if from_ns {
            out = out.replace(&format!("$({})", e.name), namespace);
        } else if let Some(v) = &e.value {
            out = out.replace(&format!("$({})", e.name), v);
        }
    }
    assert!(!out.contains("$("), "{arg}: an unknown variable");
    out
}

#[test]
fn every_document_parses_strictly_into_its_kind() {
    let m = load();
    // Every file holds at least one object, and every expected kind is there.
    for (file, kinds) in &m.kinds {
        assert!(!kinds.is_empty(), "{file} has no documents");
    }
    let all: BTreeSet<&str> = m.kinds.values().flatten().map(String::as_str).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(all.contains(kind), "no {kind} in deploy/kubernetes/");
    }
}

#[test]
fn the_base_owns_only_its_namespace() {
    let m = load();
    // One Namespace, meshca's own: `kubectl delete -k` must never delete Kuma's.
    let ns = one(&m.namespaces, "Namespace");
    assert_eq!(ns.metadata.name.as_deref(), Some(NAMESPACE));
    assert!(
        m.namespaces
            .iter()
            .all(|n| n.metadata.name.as_deref() != Some(KUMA_NAMESPACE)),
        "no Namespace object for {KUMA_NAMESPACE}"
    );
    // Every namespaced object is in meshca's namespace, but the Role and RoleBinding for the
    // mesh Secrets in Kuma's.
    for (file, namespaces) in &m.namespaces_of {
        let allowed: &[&str] = if file == KUMA_FILE {
            &[KUMA_NAMESPACE]
        } else {
            &[NAMESPACE]
        };
        for ns in namespaces {
            assert!(
                allowed.contains(&ns.as_str()),
                "{file}: an object in namespace {ns}"
            );
        }
    }
    assert_eq!(m.kinds[KUMA_FILE], ["Role", "RoleBinding"]);
    let in_kuma: Vec<&str> = m
        .roles
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(KUMA_NAMESPACE))
        .filter_map(|r| r.metadata.name.as_deref())
        .collect();
    assert_eq!(in_kuma, [KUMA_ROLE]);
    // The pods meet the restricted Pod Security Standard, enforced on the namespace.
    let labels = ns.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
}

#[test]
fn kustomization_lists_every_manifest_but_the_optional_one() {
    let text = fs::read_to_string(dir().join("kustomization.yaml")).unwrap();
    let k: Value = yaml_serde::from_str(&text).unwrap();
    assert_eq!(k["kind"], "Kustomization");
    let listed: Vec<&str> = k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file name"))
        .collect();
    for r in &listed {
        assert!(
            dir().join(r).is_file(),
            "kustomization.yaml lists {r}, which does not exist"
        );
    }
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    assert_eq!(
        listed, sorted,
        "resources are listed in apply order (file name order)"
    );
    let files: Vec<String> = manifest_files().iter().map(|p| file_name(p)).collect();
    for f in &files {
        assert_eq!(
            listed.contains(&f.as_str()),
            f != OPTIONAL_FILE,
            "{f}: every manifest but {OPTIONAL_FILE} is in kustomization.yaml"
        );
    }
}

#[test]
fn role_grants_exactly_what_meshca_uses() {
    let m = load();
    assert_eq!(
        m.roles.len(),
        2,
        "a Role in meshca's namespace and one in Kuma's"
    );
    let own = role(&m, NAME);
    assert_eq!(own.metadata.namespace.as_deref(), Some(NAMESPACE));
    let want = expected(&[
        ("", "secrets", &["get"], &OWN_SECRETS),
        ("", "secrets", &["update"], &["meshca-token-signing-key"]),
        ("", "secrets", &["create"], &[]),
        (
            "cert-manager.io",
            "certificaterequests",
            &["create", "get", "list", "watch", "delete"],
            &[],
        ),
        ("cert-manager.io", "issuers", &["get"], &[]),
    ]);
    assert_eq!(grants(own.rules.as_deref().unwrap_or_default()), want);

    // In Kuma's namespace: the sample Meshes' Secrets, by name.
    let kuma = role(&m, KUMA_ROLE);
    assert_eq!(kuma.metadata.namespace.as_deref(), Some(KUMA_NAMESPACE));
    let names = sample_mesh_secrets(&m);
    let switches: Vec<&str> = names
        .iter()
        .filter(|n| n.ends_with(".meshca-ca-switch"))
        .map(String::as_str)
        .collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let want = expected(&[
        ("", "secrets", &["get"], &all),
        ("", "secrets", &["update"], &switches),
        ("", "secrets", &["create"], &[]),
    ]);
    assert_eq!(grants(kuma.rules.as_deref().unwrap_or_default()), want);

    // Each rule says why it is there: a comment line right above it.
    for (file, count) in [("20-rbac.yaml", 5), (KUMA_FILE, 3)] {
        let text = fs::read_to_string(dir().join(file)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut rules = 0;
        for (i, l) in lines.iter().enumerate() {
            if l.trim_start().starts_with("- apiGroups:") {
                rules += 1;
                assert!(
                    i > 0 && lines[i - 1].trim_start().starts_with('#'),
                    "{file} line {}: a rule without a comment saying why",
                    i + 1
                );
            }
        }
        assert_eq!(rules, count, "{file}");
    }
}

#[test]
fn every_secrets_rule_names_its_secrets_or_is_the_documented_exception() {
    let m = load();
    for role in &m.roles {
        let name = role.metadata.name.clone().unwrap_or_default();
        for r in role.rules.iter().flatten() {
            if !r
                .resources
                .iter()
                .flatten()
                .any(|res| res == "secrets" || res == "*")
            {
                continue;
            }
            for v in &r.verbs {
                assert!(
                    ["get", "create", "update"].contains(&v.as_str()),
                    "Role {name}: `{v}` on secrets (meshca reads by name; it never lists, watches, patches or deletes Secrets)"
                );
            }
            let named = r.resource_names.as_ref().is_some_and(|n| !n.is_empty());
            // RBAC cannot restrict `create` by name: the one rule without names grants it alone.
            assert!(
                named || r.verbs == ["create"],
                "Role {name}: a Secrets rule without resourceNames: {r:?}"
            );
        }
    }
    // The exception is documented where it is granted.
    for file in ["20-rbac.yaml", KUMA_FILE] {
        // The comments, as one line of words.
        let text: Vec<String> = fs::read_to_string(dir().join(file))
            .unwrap()
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix('#'))
            .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        assert!(
            text.join(" ")
                .contains("EXCEPTION to resourceNames: RBAC cannot restrict `create` by name"),
            "{file}: the create exception is not documented"
        );
    }
}

#[test]
fn network_policy_selects_the_pods_and_guards_both_ports() {
    let m = load();
    let d = deployment(&m);
    let c = container(d);
    let labels = pod_labels(d);
    let np = one(&m.network_policies, "NetworkPolicy");
    assert_eq!(np.metadata.namespace, d.metadata.namespace);
    let spec = np.spec.as_ref().expect("spec");
    let sel = spec
        .pod_selector
        .as_ref()
        .and_then(|s| s.match_labels.clone())
        .unwrap_or_default();
    assert!(
        selects(&sel, &labels),
        "the NetworkPolicy must select the pods"
    );
    let types: Vec<&str> = spec
        .policy_types
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    assert_eq!(
        types,
        ["Ingress", "Egress"],
        "both directions are restricted"
    );
    let args = c.args.as_deref().unwrap();
    let grpc = flag_port(args, "--listen");
    let metrics = flag_port(args, "--metrics-listen");
    let rules = spec.ingress.as_deref().unwrap_or_default();
    let rules_for = |port: i32| {
        rules
            .iter()
            .filter(move |r| {
                r.ports.iter().flatten().any(|p| {
                    p.port
                        .as_ref()
                        .is_some_and(|x| container_port(c, x) == port)
                })
            })
            .collect::<Vec<_>>()
    };
    // Every rule names its ports: a rule without ports would open the metrics port too.
    assert!(rules
        .iter()
        .all(|r| r.ports.as_ref().is_some_and(|p| !p.is_empty())));
    // Every port a rule opens is one of the two.
    for r in rules {
        for p in r.ports.iter().flatten() {
            let port = container_port(c, p.port.as_ref().expect("a port"));
            assert!(port == grpc || port == metrics, "ingress to port {port}");
        }
    }
    for (port, what) in [(grpc, "gRPC"), (metrics, "metrics")] {
        let port_rules = rules_for(port);
        assert!(!port_rules.is_empty(), "{what} must be reachable");
        for r in port_rules {
            let from = r.from.as_deref().unwrap_or_default();
            assert!(
                !from.is_empty() && !from.iter().any(open_peer),
                "{what} must not be open to every pod or address: {r:?}"
            );
        }
    }
    // Metrics only from the monitoring namespace.
    for r in rules_for(metrics) {
        for peer in r.from.iter().flatten() {
            let ns = peer
                .namespace_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone())
                .unwrap_or_default();
            assert_eq!(
                ns.get("kubernetes.io/metadata.name").map(String::as_str),
                Some("monitoring"),
                "metrics from {peer:?}"
            );
        }
    }
    // gRPC from what carries the client label, namespaces or pods.
    for r in rules_for(grpc) {
        for peer in r.from.iter().flatten() {
            let labelled =
                |s: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| {
                    s.as_ref()
                        .and_then(|s| s.match_labels.as_ref())
                        .and_then(|l| l.get(CLIENT_LABEL))
                        .is_some_and(|v| v == "true")
                };
            assert!(
                labelled(&peer.namespace_selector) || labelled(&peer.pod_selector),
                "gRPC from a peer without the {CLIENT_LABEL} label: {peer:?}"
            );
        }
    }

    // Egress: DNS to the cluster's resolver on 53, and the API server's ports; every rule names
    // its ports (a rule without ports opens every port).
    let egress = spec.egress.as_deref().unwrap_or_default();
    let mut opened = BTreeSet::new();
    for r in egress {
        let ports = r.ports.as_deref().unwrap_or_default();
        assert!(!ports.is_empty(), "an egress rule without ports: {r:?}");
        for p in ports {
            let Some(IntOrString::Int(n)) = p.port else {
                panic!("egress ports are numbers: {p:?}");
            };
            opened.insert((p.protocol.clone().unwrap_or_else(|| "TCP".into()), n));
            if n == 53 {
                let to = r.to.as_deref().unwrap_or_default();
                assert!(!to.is_empty(), "DNS to anyone: {r:?}");
                for peer in to {
                    let pods = peer
                        .pod_selector
                        .as_ref()
                        .and_then(|s| s.match_labels.clone())
                        .unwrap_or_default();
                    assert_eq!(
                        pods.get("k8s-app").map(String::as_str),
                        Some("kube-dns"),
                        "{peer:?}"
                    );
                }
            }
        }
    }
    let want: BTreeSet<(String, i32)> = [("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 6443)]
        .into_iter()
        .map(|(p, n)| (p.to_owned(), n))
        .collect();
    assert_eq!(opened, want, "egress: DNS and the API server");

    // Its assumptions are written down where an operator changes them.
    let text = fs::read_to_string(dir().join("70-networkpolicy.yaml")).unwrap();
    let comments: String = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('#'))
        .collect::<Vec<_>>()
        .join(" ");
    for word in [
        "Assumptions",
        CLIENT_LABEL,
        "monitoring",
        "kube-dns",
        "API server",
        "ipBlock",
        "CNI",
        "probes",
        "Vault",
    ] {
        assert!(
            comments.contains(word),
            "70-networkpolicy.yaml: the comments do not mention {word}"
        );
    }
}

#[test]
fn metrics_bind_address_is_explained() {
    let m = load();
    let c = container(deployment(&m));
    let args = c.args.as_deref().unwrap();
    let addr: SocketAddr = single_flag(args, "--metrics-listen").parse().unwrap();
    // Bound beyond loopback (the kubelet's probes connect to the pod IP), so the manifest says
    // why and what it exposes, and the NetworkPolicy (above) limits who reaches it.
    if !addr.ip().is_loopback() {
        let text = fs::read_to_string(dir().join("40-deployment.yaml")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.trim() == "- --metrics-listen")
            .expect("--metrics-listen in 40-deployment.yaml");
        let comment: String = lines[..at]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with('#'))
            .copied()
            .collect();
        for word in ["probes", "NetworkPolicy", "authentication"] {
            assert!(
                comment.contains(word),
                "the comment above --metrics-listen should explain the bind ({word})"
            );
        }
    }
}

#[test]
fn role_bindings_give_the_roles_to_the_service_account() {
    let m = load();
    let sa = one(&m.service_accounts, "ServiceAccount");
    assert_eq!(sa.metadata.name.as_deref(), Some(NAME));
    assert_eq!(sa.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(m.role_bindings.len(), m.roles.len());
    for role in &m.roles {
        let rb = m
            .role_bindings
            .iter()
            .find(|rb| Some(&rb.role_ref.name) == role.metadata.name.as_ref())
            .unwrap_or_else(|| panic!("no RoleBinding for Role {:?}", role.metadata.name));
        assert_eq!(rb.metadata.namespace, role.metadata.namespace);
        assert_eq!(rb.role_ref.api_group, "rbac.authorization.k8s.io");
        assert_eq!(rb.role_ref.kind, "Role");
        let subject = one(
            rb.subjects.as_deref().unwrap_or_default(),
            "RoleBinding subject",
        );
        assert_eq!(subject.kind, "ServiceAccount");
        assert_eq!(Some(&subject.name), sa.metadata.name.as_ref());
        assert_eq!(subject.namespace, sa.metadata.namespace);
    }
}

#[test]
fn cluster_issuer_rbac_is_separate_and_minimal() {
    let m = load();
    assert_eq!(
        m.kinds[OPTIONAL_FILE],
        ["ClusterRole", "ClusterRoleBinding"],
        "{OPTIONAL_FILE} holds the optional ClusterRole and its binding only"
    );
    let cr = one(&m.cluster_roles, "ClusterRole");
    let want = expected(&[("cert-manager.io", "clusterissuers", &["get"], &[])]);
    assert_eq!(grants(cr.rules.as_deref().unwrap_or_default()), want);
    let crb = one(&m.cluster_role_bindings, "ClusterRoleBinding");
    assert_eq!(crb.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&crb.role_ref.name), cr.metadata.name.as_ref());
    let subject = one(crb.subjects.as_deref().unwrap_or_default(), "subject");
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(subject.name, NAME);
    assert_eq!(subject.namespace.as_deref(), Some(NAMESPACE));
}

#[test]
fn deployment_args_agree_with_volumes_ports_and_probes() {
    let m = load();
    let d = deployment(&m);
    let spec = d.spec.as_ref().unwrap();
    let pod = pod_spec(d);
    let c = container(d);
    assert_eq!(d.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(spec.replicas, Some(2));
    let labels = pod_labels(d);
    assert_eq!(
        labels.get("app.kubernetes.io/name").map(String::as_str),
        Some(NAME)
    );
    let sel = spec.selector.match_labels.clone().unwrap_or_default();
    assert!(
        selects(&sel, &labels),
        "the Deployment's selector must match its pods"
    );

    // The ServiceAccount the Role is bound to, with its token mounted.
    assert_eq!(pod.service_account_name.as_deref(), Some(NAME));
    assert_eq!(pod.automount_service_account_token, Some(true));

    let args = c.args.as_deref().expect("args");
    assert_eq!(args.first().map(String::as_str), Some("serve"));
    assert_eq!(single_flag(args, "--store"), "kubernetes");

    let volume = |mount_path: &str| {
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|vm| vm.mount_path == mount_path)
            .unwrap_or_else(|| panic!("nothing is mounted at {mount_path}"));
        let v = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap_or_else(|| panic!("no volume {}", mount.name));
        (mount, v)
    };

    // --mesh-config is the ConfigMap of Meshes, read-only.
    let (mount, v) = volume(single_flag(args, "--mesh-config"));
    assert_eq!(mount.read_only, Some(true));
    let cm = v
        .config_map
        .as_ref()
        .expect("--mesh-config is a ConfigMap volume");
    assert_eq!(cm.name, MESH_CONFIGMAP);
    assert!(
        m.config_maps
            .iter()
            .any(|x| x.metadata.name.as_deref() == Some(&cm.name)),
        "the ConfigMap {} is not in the manifests",
        cm.name
    );

    // --data-dir holds key copies: in memory only. It is a directory inside the emptyDir, so
    // meshca creates it 0700 (an emptyDir itself is 0777).
    let data_dir = std::path::Path::new(single_flag(args, "--data-dir"));
    let parent = data_dir.parent().and_then(|p| p.to_str()).expect("parent");
    let (_, v) = volume(parent);
    let ed = v.empty_dir.as_ref().expect("--data-dir is an emptyDir");
    assert_eq!(ed.medium.as_deref(), Some("Memory"));

    // Ports: --listen is the grpc port, --metrics-listen the metrics port the probes use.
    let grpc = flag_port(args, "--listen");
    let metrics = flag_port(args, "--metrics-listen");
    assert_eq!(container_port(c, &IntOrString::String("grpc".into())), grpc);
    assert_eq!(
        container_port(c, &IntOrString::String("metrics".into())),
        metrics
    );
    for (probe, path) in [
        (&c.readiness_probe, "/readyz"),
        (&c.liveness_probe, "/healthz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("no httpGet probe for {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(container_port(c, &get.port), metrics, "{path} probe port");
    }

    // The server certificate names the Service.
    let names: Vec<String> = flag(args, "--server-name")
        .into_iter()
        .map(|n| expand(n, c, NAMESPACE))
        .collect();
    let svc = one(&m.services, "Service");
    let svc_name = svc.metadata.name.as_deref().unwrap();
    for want in [
        format!("{svc_name}.{NAMESPACE}.svc"),
        format!("{svc_name}.{NAMESPACE}.svc.cluster.local"),
    ] {
        assert!(
            names.contains(&want),
            "--server-name {want} missing: {names:?}"
        );
    }

    // Mesh Secrets in Kuma's namespace (where the Role for them is), meshca's own in its own.
    assert_eq!(single_flag(args, "--namespace"), KUMA_NAMESPACE);
    assert_eq!(
        role(&m, KUMA_ROLE).metadata.namespace.as_deref(),
        Some(KUMA_NAMESPACE)
    );
    assert_eq!(
        expand(single_flag(args, "--own-namespace"), c, NAMESPACE),
        NAMESPACE
    );

    // meshca's own namespace from the downward API: --own-namespace, and where the certmanager
    // backend creates CertificateRequests (MESHCA_CERTMANAGER_NAMESPACE unset).
    assert!(c
        .env
        .iter()
        .flatten()
        .all(|e| e.name != "MESHCA_CERTMANAGER_NAMESPACE"));
    let env = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "MESHCA_NAMESPACE")
        .expect("MESHCA_NAMESPACE");
    let field = env
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("MESHCA_NAMESPACE from a fieldRef");
    assert_eq!(field.field_path, "metadata.namespace");

    // Hardening.
    let psc = pod.security_context.as_ref().expect("pod securityContext");
    let csc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert!(psc.run_as_non_root == Some(true) || csc.run_as_non_root == Some(true));
    assert_eq!(csc.run_as_user.or(psc.run_as_user), Some(65532));
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    let drop = csc.capabilities.as_ref().and_then(|c| c.drop.clone());
    assert_eq!(drop, Some(vec!["ALL".to_owned()]));
    let seccomp = csc
        .seccomp_profile
        .as_ref()
        .or(psc.seccomp_profile.as_ref());
    assert_eq!(seccomp.map(|s| s.type_.as_str()), Some("RuntimeDefault"));
    let res = c.resources.as_ref().expect("resources");
    assert!(res
        .requests
        .as_ref()
        .is_some_and(|r| r.contains_key("memory")));
    assert!(res
        .limits
        .as_ref()
        .is_some_and(|r| r.contains_key("memory")));
}

#[test]
fn service_and_pdb_select_the_pods() {
    let m = load();
    let d = deployment(&m);
    let c = container(d);
    let labels = pod_labels(d);
    let args = c.args.as_deref().unwrap();
    let grpc = flag_port(args, "--listen");
    let metrics = flag_port(args, "--metrics-listen");

    let svc = one(&m.services, "Service");
    assert_eq!(svc.metadata.name.as_deref(), Some(NAME));
    assert_eq!(svc.metadata.namespace, d.metadata.namespace);
    let spec = svc.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let sel = spec.selector.clone().unwrap_or_default();
    assert!(
        selects(&sel, &labels),
        "the Service must select the Deployment's pods"
    );
    let ports = spec.ports.as_deref().unwrap_or_default();
    let target = |name: &str| {
        let p = ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("the Service has no port {name}"));
        let t = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
        (p.port, container_port(c, &t))
    };
    assert_eq!(target("grpc"), (grpc, grpc));
    assert_eq!(target("metrics"), (metrics, metrics));
    // What each port speaks, for meshes, gateways and load balancers in front: gRPC (HTTP/2 in
    // TLS) and plain HTTP.
    let app_protocol = |name: &str| {
        ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| p.app_protocol.clone())
    };
    assert_eq!(app_protocol("grpc").as_deref(), Some("grpc"));
    assert_eq!(app_protocol("metrics").as_deref(), Some("http"));

    let pdb = one(&m.pdbs, "PodDisruptionBudget");
    assert_eq!(pdb.metadata.namespace, d.metadata.namespace);
    let pspec = pdb.spec.as_ref().unwrap();
    let psel = pspec
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.clone())
        .unwrap_or_default();
    assert!(
        selects(&psel, &labels),
        "the PodDisruptionBudget must select the pods"
    );
    let replicas = d.spec.as_ref().unwrap().replicas.unwrap();
    match &pspec.min_available {
        Some(IntOrString::Int(n)) => assert!(*n >= 1 && *n < replicas, "minAvailable {n}"),
        other => panic!("minAvailable: {other:?}"),
    }
}

#[test]
fn sample_mesh_is_valid() {
    let m = load();
    let cm = m
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(MESH_CONFIGMAP))
        .expect("the Mesh ConfigMap");
    assert_eq!(cm.metadata.namespace.as_deref(), Some(NAMESPACE));
    let data = cm.data.as_ref().expect("data");
    let text = data.get("default.yaml").expect("default.yaml");
    let mesh = Mesh::from_yaml(text, &meshca_tests::all_backends())
        .unwrap_or_else(|e| panic!("default.yaml: {e}"));
    assert_eq!(mesh.name.as_str(), "default");
    let b = mesh.enabled_backend().expect("an enabled backend");
    assert_eq!(b.backend_type(), "builtin");
    for key in data.keys() {
        assert!(
            key.ends_with(".yaml") || key.ends_with(".yml"),
            "{key}: --mesh-config reads *.yaml and *.yml only"
        );
    }

    // The commented-out certmanager example is valid once uncommented.
    let mut uncommenting = false;
    let example: String = text
        .lines()
        .map(|l| {
            uncommenting |= l.trim_start().starts_with("# - name:");
            if uncommenting {
                l.replacen("# ", "", 1)
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        uncommenting,
        "default.yaml has no commented-out example backend"
    );
    let mesh = Mesh::from_yaml(&example, &meshca_tests::all_backends())
        .unwrap_or_else(|e| panic!("the example: {e}\n{example}"));
    let backends = &mesh.mtls.as_ref().unwrap().backends;
    assert_eq!(backends.len(), 2);
    assert_eq!(backends[1].backend_type(), "certmanager");
}

#[test]
fn ports_stay_clear_of_kuma_cp() {
    // kuma-cp listens on 5676-5685 (API server, diagnostics, DNS, ...): meshca beside it on one
    // host must not collide. Its defaults are 5690 (gRPC) and 5691 (metrics).
    let m = load();
    let c = container(deployment(&m));
    let args = c.args.as_deref().unwrap();
    let grpc = flag_port(args, "--listen");
    let metrics = flag_port(args, "--metrics-listen");
    assert_eq!((grpc, metrics), (5690, 5691));
    let svc = one(&m.services, "Service");
    let ports = svc
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_deref()
        .unwrap_or_default();
    let mut all: Vec<i32> = ports.iter().map(|p| p.port).collect();
    all.extend(c.ports.iter().flatten().map(|p| p.container_port));
    for port in all {
        assert!(
            !(5676..=5685).contains(&port),
            "port {port} is in kuma-cp's range 5676-5685"
        );
    }
}

#[test]
fn image_is_pinned_by_tag_or_digest() {
    // A release pins the image by digest (README.md); until then a fixed tag, never `latest`
    // or none (which the kubelet would pull anew at every start).
    let m = load();
    let c = container(deployment(&m));
    let image = c.image.as_deref().expect("image");
    if let Some((_, digest)) = image.split_once("@sha256:") {
        assert!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "{image}: a digest is sha256 and 64 hex digits"
        );
    } else {
        let last = image.rsplit('/').next().unwrap();
        let tag = last.split_once(':').map(|(_, t)| t);
        assert!(
            tag.is_some_and(|t| !t.is_empty() && t != "latest"),
            "{image}: neither a digest nor a fixed tag"
        );
    }
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
}

// === kubernetes-validate ===

/// `$MESHCA_PYTHON`: the venv scripts/test makes from scripts/requirements-test.txt, which has
/// kubernetes-validate.
fn python() -> PathBuf {
    std::env::var_os("MESHCA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "MESHCA_PYTHON is not set: these tests run kubernetes-validate from the venv \
             scripts/test makes (python3 -m venv V && V/bin/pip install -r \
             scripts/requirements-test.txt && export MESHCA_PYTHON=V/bin/python)"
            )
        })
}

/// (major, minor) of "1.33" or "1.33.0".
fn major_minor(v: &str) -> (u32, u32) {
    let mut it = v
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or_else(|_| panic!("version {v}")));
    (
        it.next().unwrap(),
        it.next().unwrap_or_else(|| panic!("version {v}")),
    )
}

/// The oldest Kubernetes version meshca supports: the one of the k8s-openapi feature
/// (`v1_33`) its crates are built with.
fn oldest_supported() -> (u32, u32) {
    let text =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("k8s-openapi "))
        .expect("k8s-openapi in tests/Cargo.toml");
    let feature = line
        .split('"')
        .find(|w| w.starts_with("v1_"))
        .expect("a v1_NN feature of k8s-openapi");
    major_minor(&feature[1..].replace('_', "."))
}

/// Every Kubernetes version meshca supports, "1.33" ..: the oldest up to the newest that
/// kubernetes-validate has schemas for.
fn supported_versions() -> Vec<String> {
    let out = Command::new(python())
        .args([
            "-c",
            "import kubernetes_validate.utils as u; print('\\n'.join(u.all_versions()))",
        ])
        .output()
        .expect("run $MESHCA_PYTHON");
    assert!(
        out.status.success(),
        "kubernetes_validate is not installed in $MESHCA_PYTHON: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let oldest = oldest_supported();
    let mut versions: Vec<(u32, u32)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(major_minor)
        .filter(|v| *v >= oldest)
        .collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(
        versions.first(),
        Some(&oldest),
        "kubernetes-validate has no schemas for {oldest:?}, the oldest version meshca supports"
    );
    versions
        .into_iter()
        .map(|(a, b)| format!("{a}.{b}"))
        .collect()
}

/// Runs `python -m kubernetes_validate` on `files` (relative to `cwd`) for every version of
/// `versions`: (exit status success, stdout and stderr).
fn kubernetes_validate(
    cwd: &Path,
    files: &[String],
    versions: &[String],
    strict: bool,
) -> (bool, String) {
    let mut cmd = Command::new(python());
    cmd.current_dir(cwd).args(["-m", "kubernetes_validate"]);
    if strict {
        cmd.arg("--strict");
    }
    for v in versions {
        cmd.args(["-k", v]);
    }
    let out = cmd.args(files).output().expect("run kubernetes_validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_manifest_validates_strictly_for_every_supported_kubernetes_version() {
    let versions = supported_versions();
    let files: Vec<String> = manifest_files().iter().map(|p| file_name(p)).collect();
    // One line per (file, object, version), as kubernetes-validate prints it. An object whose
    // schema it does not know is only a WARN with exit status 0: hence every line is looked for.
    let mut want = BTreeSet::new();
    for f in &files {
        let docs = documents(&fs::read_to_string(dir().join(f)).unwrap()).unwrap();
        assert!(!docs.is_empty(), "{f}");
        for doc in docs {
            let kind = doc["kind"].as_str().unwrap().to_lowercase();
            let name = doc["metadata"]["name"].as_str().unwrap();
            for v in &versions {
                want.insert(format!(
                    "INFO {f} passed for resource {kind}/{name} against version {v}"
                ));
            }
        }
    }
    let (ok, out) = kubernetes_validate(&dir(), &files, &versions, true);
    assert!(ok, "kubernetes-validate --strict failed:\n{out}");
    let got: BTreeSet<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(
        got, want,
        "every object passes for every version {versions:?}, without warnings:\n{out}"
    );
}

#[test]
fn kubernetes_validate_strict_refuses_an_unknown_field() {
    let versions = &supported_versions()[..1];
    let text = fs::read_to_string(dir().join("40-deployment.yaml")).unwrap();
    let broken = text.replacen("        readinessProbe:", "        readynessProbe:", 1);
    assert_ne!(broken, text);
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("broken.yaml"), &broken).unwrap();
    let files = ["broken.yaml".to_owned()];
    let (ok, out) = kubernetes_validate(tmp.path(), &files, versions, true);
    assert!(!ok, "--strict accepted a misspelt field:\n{out}");
    assert!(
        out.contains("ERROR broken.yaml did not validate for resource deployment/meshca")
            && out.contains("readynessProbe"),
        "{out}"
    );
    // Without --strict the misspelt field is let through: --strict is what catches it.
    let (ok, out) = kubernetes_validate(tmp.path(), &files, versions, false);
    assert!(ok, "{out}");
}

// === the optional ServiceMonitor ===

/// The one document of `optional/FILE`.
fn optional_doc(file: &str) -> Value {
    let text = fs::read_to_string(dir().join(OPTIONAL_DIR).join(file)).unwrap();
    let mut docs = documents(&text).unwrap();
    assert_eq!(docs.len(), 1, "{file}: one document");
    docs.remove(0)
}

/// `openAPIV3Schema` of version v1 of prometheus-operator's ServiceMonitor CRD, vendored in
/// optional/upstream/ (see its README.md).
fn service_monitor_schema() -> Value {
    let path = dir()
        .join(OPTIONAL_DIR)
        .join("upstream/monitoring.coreos.com_servicemonitors.yaml");
    let crd = one(
        &documents(&fs::read_to_string(path).unwrap()).unwrap(),
        "CRD",
    )
    .clone();
    assert_eq!(crd["kind"], "CustomResourceDefinition");
    assert_eq!(crd["spec"]["group"], "monitoring.coreos.com");
    assert_eq!(crd["spec"]["names"]["kind"], "ServiceMonitor");
    crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["name"] == "v1")
        .expect("version v1")["schema"]["openAPIV3Schema"]
        .clone()
}

#[test]
fn service_monitor_validates_against_the_crd_schema() {
    let schema = service_monitor_schema();
    let sm = optional_doc("servicemonitor.yaml");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["kind"], "ServiceMonitor");
    let problems = meshca_peers::kube::schema::validate(&sm, &schema);
    assert!(problems.is_empty(), "{problems:?}");

    // The check bites: a misspelt field, and a number where the schema wants a string.
    let mut bad = sm.clone();
    bad["spec"]["endpoints"][0]["prot"] = bad["spec"]["endpoints"][0]["port"].take();
    bad["spec"]["endpoints"][0]["interval"] = Value::from(30);
    let problems = meshca_peers::kube::schema::validate(&bad, &schema);
    let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
    for want in ["spec.endpoints[0].prot", "spec.endpoints[0].interval"] {
        assert!(fields.contains(&want), "{want} not in {problems:?}");
    }
}

#[test]
fn service_monitor_scrapes_the_metrics_port_and_is_optional() {
    let m = load();
    let sm = optional_doc("servicemonitor.yaml");
    let svc = one(&m.services, "Service");
    assert_eq!(sm["metadata"]["namespace"], NAMESPACE);
    // It selects the Service (by its labels), in meshca's namespace only.
    let sel: BTreeMap<String, String> =
        serde_json::from_value(sm["spec"]["selector"]["matchLabels"].clone()).unwrap();
    let svc_labels = svc.metadata.labels.clone().unwrap_or_default();
    assert!(
        selects(&sel, &svc_labels),
        "the ServiceMonitor must select the Service"
    );
    assert_eq!(
        sm["spec"]["namespaceSelector"],
        serde_json::json!({"matchNames": [NAMESPACE]})
    );
    // Its endpoint is the Service's metrics port, /metrics over plain HTTP.
    let endpoints = sm["spec"]["endpoints"].as_array().expect("endpoints");
    let ep = one(endpoints, "endpoint");
    let port_name = ep["port"].as_str().expect("a port name");
    let ports = svc
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_deref()
        .unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some(port_name))
        .unwrap_or_else(|| panic!("the Service has no port {port_name}"));
    let c = container(deployment(&m));
    let metrics = flag_port(c.args.as_deref().unwrap(), "--metrics-listen");
    assert_eq!(port.port, metrics);
    assert_eq!(ep["path"], "/metrics");
    assert_eq!(ep["scheme"], "http");

    // A kustomize Component with just it; the base neither lists it nor uses the Component (the
    // CRD may be absent from the cluster).
    let comp = optional_doc("kustomization.yaml");
    assert_eq!(comp["apiVersion"], "kustomize.config.k8s.io/v1alpha1");
    assert_eq!(comp["kind"], "Component");
    assert_eq!(
        comp["resources"],
        serde_json::json!(["servicemonitor.yaml"])
    );
    let base: Value =
        yaml_serde::from_str(&fs::read_to_string(dir().join("kustomization.yaml")).unwrap())
            .unwrap();
    assert!(
        base.get("components").is_none(),
        "the base enables no Component"
    );
    for r in base["resources"].as_array().unwrap() {
        assert!(!r.as_str().unwrap().starts_with(OPTIONAL_DIR), "{r}");
    }
}

#[test]
fn readme_documents_the_layout_the_image_and_the_digest() {
    let text = fs::read_to_string(dir().join("README.md")).unwrap();
    let mut files: Vec<String> = manifest_files().iter().map(|p| file_name(p)).collect();
    files.push(format!("{OPTIONAL_DIR}/"));
    files.push(format!("{KUMA_MESHES_DIR}/"));
    for f in files {
        assert!(
            text.contains(&format!("`{f}`")),
            "README.md does not name {f}"
        );
    }
    for phrase in [
        "ServiceMonitor",
        "components:",
        "podman build -f Containerfile",
        "docker build -f Containerfile",
        "@sha256:",
        "images:",
        "digest:",
    ] {
        assert!(text.contains(phrase), "README.md does not say {phrase:?}");
    }
}

/// The strict parse bites: a misspelt field is reported with its path.
#[test]
fn misspelt_field_is_reported() {
    let yaml = r"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: x
spec:
  selector:
    matchLabels: {app: x}
  template:
    metadata:
      labels: {app: x}
    spec:
      containers:
      - name: x
        image: x
        readynessProbe:
          httpGet: {path: /readyz, port: 5691}
";
    let doc: Value = yaml_serde::from_str(yaml).unwrap();
    // serde alone accepts it, dropping the probe.
    let d: Deployment = serde_json::from_value(doc.clone()).unwrap();
    assert!(container(&d).readiness_probe.is_none());
    let err = strict::<Deployment>(&doc).unwrap_err();
    assert!(
        err.contains("spec.template.spec.containers[0].readynessProbe: unknown field"),
        "{err}"
    );
    let fixed: Value = yaml_serde::from_str(&yaml.replace("readyness", "readiness")).unwrap();
    strict::<Deployment>(&fixed).unwrap();

    let err = parse_doc(
        &serde_json::json!({"apiVersion": "v1", "kind": "Secret"}),
        &mut Manifests::default(),
    )
    .unwrap_err();
    assert!(err.contains("unknown kind \"Secret\""), "{err}");
}

// === kuma-meshes/: --mesh-source kubernetes ===

/// The documents of `kuma-meshes/FILE`.
fn kuma_meshes_docs(file: &str) -> Vec<Value> {
    let text = fs::read_to_string(dir().join(KUMA_MESHES_DIR).join(file)).unwrap();
    documents(&text).unwrap()
}

/// The merge key of a list item, as kustomize's strategic merge knows it for the lists the patch
/// touches (containers, volumes: `name`; volumeMounts: `mountPath`).
fn merge_key(item: &Value) -> Option<(&'static str, Value)> {
    ["mountPath", "name"]
        .into_iter()
        .find_map(|k| item.get(k).map(|v| (k, v.clone())))
}

/// A strategic merge patch of `patch` into `base`, for the shapes the Component uses: objects
/// merged field by field, lists of keyed items merged by key (`$patch: delete` removes the item),
/// other lists (args) replaced whole.
fn strategic_merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(existing) => strategic_merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(p)) if p.iter().all(|i| merge_key(i).is_some()) => {
            for item in p {
                let (key, value) = merge_key(item).unwrap();
                let at = b.iter().position(|x| x.get(key) == Some(&value));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (at, delete) {
                    (Some(i), true) => {
                        b.remove(i);
                    }
                    (Some(i), false) => strategic_merge(&mut b[i], item),
                    (None, true) => panic!("$patch: delete of {key}={value}: not in the base"),
                    (None, false) => b.push(item.clone()),
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// The base Deployment with the Component's patch applied.
fn kuma_meshes_deployment() -> Value {
    let mut base = one(
        &documents(&fs::read_to_string(dir().join("40-deployment.yaml")).unwrap()).unwrap(),
        "Deployment",
    )
    .clone();
    let patch = one(&kuma_meshes_docs("deployment-patch.yaml"), "patch").clone();
    assert_eq!(patch["kind"], "Deployment");
    assert_eq!(patch["metadata"]["name"], base["metadata"]["name"]);
    assert_eq!(
        patch["metadata"]["namespace"],
        base["metadata"]["namespace"]
    );
    strategic_merge(&mut base, &patch);
    base
}

#[test]
fn kuma_meshes_component_follows_kumas_meshes_without_the_configmap() {
    let comp = one(&kuma_meshes_docs("kustomization.yaml"), "kustomization").clone();
    assert_eq!(comp["apiVersion"], "kustomize.config.k8s.io/v1alpha1");
    assert_eq!(comp["kind"], "Component");
    assert_eq!(
        comp["resources"],
        serde_json::json!(["rbac-kuma-meshes.yaml"])
    );
    let patches: Vec<&str> = comp["patches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(patches, ["deployment-patch.yaml", "configmap-delete.yaml"]);

    // The Deployment: the base's args but for the mesh source; no ConfigMap anywhere.
    let patched = kuma_meshes_deployment();
    let d: Deployment = strict(&patched).unwrap();
    let c = container(&d);
    let args = c.args.clone().unwrap();
    assert_eq!(single_flag(&args, "--mesh-source"), "kubernetes");
    assert!(flag(&args, "--mesh-config").is_empty(), "{args:?}");
    let base = load();
    let mut base_args = container(deployment(&base)).args.clone().unwrap();
    let at = base_args.iter().position(|a| a == "--mesh-config").unwrap();
    base_args.splice(at..at + 2, ["--mesh-source".into(), "kubernetes".into()]);
    assert_eq!(
        args, base_args,
        "the patch's args drifted from 40-deployment.yaml"
    );
    let pod = pod_spec(&d);
    assert!(pod.volumes.iter().flatten().all(|v| v.config_map.is_none()));
    assert!(c
        .volume_mounts
        .iter()
        .flatten()
        .all(|m| m.mount_path != "/etc/meshca/meshes"));
    // The rest of the pod is the base's.
    assert_eq!(
        c.readiness_probe,
        container(deployment(&base)).readiness_probe
    );
    assert_eq!(pod.service_account_name.as_deref(), Some(NAME));

    let cm = one(&kuma_meshes_docs("configmap-delete.yaml"), "ConfigMap").clone();
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], MESH_CONFIGMAP);
    assert_eq!(cm["metadata"]["namespace"], NAMESPACE);
    assert_eq!(cm["$patch"], "delete");

    // RBAC: exactly get, list, watch on meshes.kuma.io (cluster-wide) and create on Events in
    // `default` (where the Events of cluster-scoped objects live), bound to meshca's account.
    let mut m = Manifests::default();
    for doc in kuma_meshes_docs("rbac-kuma-meshes.yaml") {
        parse_doc(&doc, &mut m).unwrap();
    }
    let cr = one(&m.cluster_roles, "ClusterRole");
    assert_eq!(
        grants(cr.rules.as_deref().unwrap_or_default()),
        expected(&[("kuma.io", "meshes", &["get", "list", "watch"], &[])])
    );
    let events = one(&m.roles, "Role");
    assert_eq!(events.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(
        grants(events.rules.as_deref().unwrap_or_default()),
        expected(&[("events.k8s.io", "events", &["create"], &[])])
    );
    let crb = one(&m.cluster_role_bindings, "ClusterRoleBinding");
    assert_eq!(Some(&crb.role_ref.name), cr.metadata.name.as_ref());
    let rb = one(&m.role_bindings, "RoleBinding");
    assert_eq!(rb.role_ref.kind, "Role");
    assert_eq!(Some(&rb.role_ref.name), events.metadata.name.as_ref());
    assert_eq!(rb.metadata.namespace, events.metadata.namespace);
    for subjects in [&crb.subjects, &rb.subjects] {
        let s = one(subjects.as_deref().unwrap_or_default(), "subject");
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
            ("ServiceAccount", NAME, Some(NAMESPACE))
        );
    }
}

#[test]
fn kuma_meshes_component_validates_strictly_for_every_supported_kubernetes_version() {
    let versions = supported_versions();
    let tmp = tempfile::tempdir().unwrap();
    fs::copy(
        dir().join(KUMA_MESHES_DIR).join("rbac-kuma-meshes.yaml"),
        tmp.path().join("rbac-kuma-meshes.yaml"),
    )
    .unwrap();
    fs::write(
        tmp.path().join("deployment.yaml"),
        yaml_serde::to_string(&kuma_meshes_deployment()).unwrap(),
    )
    .unwrap();
    let files = [
        "rbac-kuma-meshes.yaml".to_owned(),
        "deployment.yaml".to_owned(),
    ];
    let (ok, out) = kubernetes_validate(tmp.path(), &files, &versions, true);
    assert!(ok, "kubernetes-validate --strict failed:\n{out}");
    let passed = out
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    assert_eq!(
        passed,
        5 * versions.len(),
        "every object, every version:\n{out}"
    );
    assert!(!out.contains("WARN"), "{out}");
}
