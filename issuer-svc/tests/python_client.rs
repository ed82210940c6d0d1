//! A client nobody here wrote: Python grpcio, with stubs generated from the published proto at
//! test time, calls IssueCertificate and grpc.health.v1 over mTLS.
//!
//! The interpreter is `$MESHCA_PYTHON`, default `<workspace>/target/py-venv/bin/python`
//! (scripts/test creates it). Without it the test fails when `CI` is set and is skipped otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

const HEALTH_PROTO: &str = r#"syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
"#;

const SCRIPT: &str = r#"
import json, sys
import grpc
sys.path.insert(0, sys.argv[1])
import meshca_pb2, meshca_pb2_grpc
import health_pb2, health_pb2_grpc

tls, target = sys.argv[2], sys.argv[3]
read = lambda n: open(f"{tls}/{n}", "rb").read()
creds = grpc.ssl_channel_credentials(read("ca.pem"), read("admin-key.pem"), read("admin.pem"))
channel = grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "localhost")])
grpc.channel_ready_future(channel).result(timeout=20)

issuer = meshca_pb2_grpc.IssuerStub(channel)
resp = issuer.IssueCertificate(meshca_pb2.IssueCertificateRequest(
    mesh="default", tags=[meshca_pb2.Tag(name="kuma.io/service", value="py")]), timeout=20)
health = health_pb2_grpc.HealthStub(channel)
h = health.Check(health_pb2.HealthCheckRequest(service="meshca.v1.Issuer"), timeout=20)
try:
    issuer.IssueCertificate(meshca_pb2.IssueCertificateRequest(mesh="default"), timeout=20)
    bad = "OK"
except grpc.RpcError as e:
    bad = e.code().name
c = resp.certificate
print(json.dumps({
    "sans": list(c.uri_sans), "has_key": "PRIVATE KEY" in c.private_key_pem,
    "chain": c.cert_chain_pem, "bundle": c.trust_bundle_pem,
    "health": health_pb2.HealthCheckResponse.ServingStatus.Name(h.status), "bad": bad,
}))
"#;

#[tokio::test]
async fn python_grpcio_client_issues_and_checks_health() {
    let Some(py) = python() else { return };
    let server = Server::start(&[], &[]);
    let gen = server.dir.path().join("py");
    // Top-level file name: a `grpc/` directory would shadow the grpc package itself.
    std::fs::create_dir_all(gen.join("protos")).unwrap();
    std::fs::write(gen.join("protos/health.proto"), HEALTH_PROTO).unwrap();
    let proto_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    for (include, file) in [
        (proto_dir.clone(), proto_dir.join("meshca.proto")),
        (gen.join("protos"), gen.join("protos/health.proto")),
    ] {
        let out = Command::new(&py)
            .args(["-m", "grpc_tools.protoc"])
            .arg(format!("-I{}", include.display()))
            .arg(format!("--python_out={}", gen.display()))
            .arg(format!("--grpc_python_out={}", gen.display()))
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "protoc: {out:?}");
    }
    let script = gen.join("client.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let mut child = tokio::process::Command::new(&py)
        .arg(&script)
        .arg(&gen)
        .arg(server.tls_dir())
        .arg(&server.grpc)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = async {
        use tokio::io::AsyncReadExt;
        let (mut o, mut e) = (String::new(), String::new());
        let (mut so, mut se) = (stdout, stderr);
        let _ = tokio::join!(so.read_to_string(&mut o), se.read_to_string(&mut e));
        let status = child.wait().await.unwrap();
        (status, o, e)
    };
    let (status, out, err) = bounded(60, read).await;
    assert!(status.success(), "python client failed:\n{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["sans"][0], "spiffe://default/py");
    assert_eq!(v["has_key"], true);
    assert_eq!(v["health"], "SERVING");
    assert_eq!(v["bad"], "INVALID_ARGUMENT");
    openssl_verify(
        server.dir.path(),
        v["chain"].as_str().unwrap(),
        v["bundle"].as_str().unwrap(),
    );
}
