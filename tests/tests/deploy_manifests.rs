//! The Kubernetes manifests in `deploy/kubernetes/`: every document parses strictly into the
//! k8s-openapi type its `kind` names (a misspelt field, which serde would silently drop, fails
//! with its path; an unknown kind fails), `kustomization.yaml` lists files that exist and leaves
//! out only the optional ClusterIssuer RBAC, the Role grants exactly what the Kubernetes
//! SecretStore and the certmanager backend use, the RoleBinding gives it to the ServiceAccount,
//! the Deployment's args agree with its volumes, ports and probes, the Service and the
//! PodDisruptionBudget select its pods, and the sample Mesh in the ConfigMap (and its
//! commented-out certmanager example) is valid.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ca_core::config::{BackendType, Mesh};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::serde::de::{Deserialize as _, DeserializeOwned};
use k8s_openapi::serde::Serialize;
use serde_json::Value;

const NAMESPACE: &str = "kuma-system";
const NAME: &str = "meshca";
const MESH_CONFIGMAP: &str = "meshca-meshes";
const OPTIONAL_FILE: &str = "21-rbac-clusterissuer.yaml";

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
    /// File name → the kinds of its documents.
    kinds: BTreeMap<String, Vec<String>>,
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
        other => return Err(format!("unknown kind {other:?}")),
    }
    Ok(kind)
}

/// The non-empty documents of a YAML stream.
fn documents(text: &str) -> Result<Vec<Value>, String> {
    let docs = serde_yaml::Deserializer::from_str(text)
        .map(Value::deserialize)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not YAML: {e}"))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The manifest files: every `*.yaml` but kustomization.yaml, sorted.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir())
        .expect("deploy/kubernetes/ exists")
        .map(|e| e.unwrap().path())
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
        for (i, doc) in docs.iter().enumerate() {
            match parse_doc(doc, &mut m) {
                Ok(kind) => kinds.push(kind),
                Err(e) => failures.push(format!("{name} (document {i}): {e}")),
            }
        }
        m.kinds.insert(name, kinds);
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

/// (apiGroup, resource) → verbs.
fn grants(rules: &[PolicyRule]) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for r in rules {
        assert!(
            r.resource_names.is_none() && r.non_resource_urls.is_none(),
            "unexpected rule shape: {r:?}"
        );
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                out.entry((g.clone(), res.clone()))
                    .or_default()
                    .extend(r.verbs.iter().cloned());
            }
        }
    }
    out
}

fn expected(items: &[(&str, &str, &[&str])]) -> BTreeMap<(String, String), BTreeSet<String>> {
    items
        .iter()
        .map(|(g, r, verbs)| {
            (
                ((*g).to_owned(), (*r).to_owned()),
                verbs.iter().map(|v| (*v).to_owned()).collect(),
            )
        })
        .collect()
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
    ] {
        assert!(all.contains(kind), "no {kind} in deploy/kubernetes/");
    }
    let ns = one(&m.namespaces, "Namespace");
    assert_eq!(ns.metadata.name.as_deref(), Some(NAMESPACE));
}

#[test]
fn kustomization_lists_every_manifest_but_the_optional_one() {
    let text = fs::read_to_string(dir().join("kustomization.yaml")).unwrap();
    let k: Value = serde_yaml::from_str(&text).unwrap();
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
    let role = one(&m.roles, "Role");
    assert_eq!(role.metadata.name.as_deref(), Some(NAME));
    assert_eq!(role.metadata.namespace.as_deref(), Some(NAMESPACE));
    let want = expected(&[
        ("", "secrets", &["get", "create", "update"]),
        (
            "cert-manager.io",
            "certificaterequests",
            &["create", "get", "list", "watch", "delete"],
        ),
        ("cert-manager.io", "issuers", &["get"]),
    ]);
    assert_eq!(grants(role.rules.as_deref().unwrap_or_default()), want);

    // Each rule says why it is there: a comment line right above it.
    let text = fs::read_to_string(dir().join("20-rbac.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.trim_start().starts_with("- apiGroups:") {
            rules += 1;
            assert!(
                i > 0 && lines[i - 1].trim_start().starts_with('#'),
                "20-rbac.yaml line {}: a rule without a comment saying why",
                i + 1
            );
        }
    }
    assert_eq!(rules, 3);
}

#[test]
fn role_binding_gives_the_role_to_the_service_account() {
    let m = load();
    let role = one(&m.roles, "Role");
    let sa = one(&m.service_accounts, "ServiceAccount");
    let rb = one(&m.role_bindings, "RoleBinding");
    assert_eq!(sa.metadata.name.as_deref(), Some(NAME));
    assert_eq!(sa.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(rb.metadata.namespace, role.metadata.namespace);
    assert_eq!(rb.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(rb.role_ref.kind, "Role");
    assert_eq!(Some(&rb.role_ref.name), role.metadata.name.as_ref());
    let subject = one(
        rb.subjects.as_deref().unwrap_or_default(),
        "RoleBinding subject",
    );
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(Some(&subject.name), sa.metadata.name.as_ref());
    assert_eq!(subject.namespace, sa.metadata.namespace);
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
    let want = expected(&[("cert-manager.io", "clusterissuers", &["get"])]);
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
    let names = flag(args, "--server-name");
    let svc = one(&m.services, "Service");
    let svc_name = svc.metadata.name.as_deref().unwrap();
    for want in [
        format!("{svc_name}.{NAMESPACE}.svc"),
        format!("{svc_name}.{NAMESPACE}.svc.cluster.local"),
    ] {
        assert!(
            names.contains(&want.as_str()),
            "--server-name {want} missing: {names:?}"
        );
    }

    // The namespace the SecretStore works in, from the downward API.
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
    let mesh = Mesh::from_yaml(text).unwrap_or_else(|e| panic!("default.yaml: {e}"));
    assert_eq!(mesh.name.as_str(), "default");
    let b = mesh.enabled_backend().expect("an enabled backend");
    assert_eq!(b.backend_type(), BackendType::Builtin);
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
    let mesh = Mesh::from_yaml(&example).unwrap_or_else(|e| panic!("the example: {e}\n{example}"));
    let backends = &mesh.mtls.as_ref().unwrap().backends;
    assert_eq!(backends.len(), 2);
    assert_eq!(backends[1].backend_type(), BackendType::Certmanager);
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
          httpGet: {path: /readyz, port: 5681}
";
    let doc: Value = serde_yaml::from_str(yaml).unwrap();
    // serde alone accepts it, dropping the probe.
    let d: Deployment = serde_json::from_value(doc.clone()).unwrap();
    assert!(container(&d).readiness_probe.is_none());
    let err = strict::<Deployment>(&doc).unwrap_err();
    assert!(
        err.contains("spec.template.spec.containers[0].readynessProbe: unknown field"),
        "{err}"
    );
    let fixed: Value = serde_yaml::from_str(&yaml.replace("readyness", "readiness")).unwrap();
    strict::<Deployment>(&fixed).unwrap();

    let err = parse_doc(
        &serde_json::json!({"apiVersion": "v1", "kind": "Secret"}),
        &mut Manifests::default(),
    )
    .unwrap_err();
    assert!(err.contains("unknown kind \"Secret\""), "{err}");
}
