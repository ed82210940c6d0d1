//! Library benchmarks: the issuance path of the local backends and its parts.
//!
//! `cargo bench -p meshca-tests --bench issuance`. Figures are per core (criterion runs one thread).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use ca_core::config::DEFAULT_DP_CERT_EXPIRATION;
use ca_core::{
    issue_certificate, CertificateAuthority, CommonNameTemplate, Identity, IssueParams, KeySource,
    KeyType, MeshName,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshca_tests::fixtures::{Builtin, Provided};
use meshca_tests::Fixture;
use rcgen::{CertificateParams, KeyPair};

fn identity() -> Identity {
    Identity::new(
        MeshName::new("default").unwrap(),
        [
            ("kuma.io/service", "backend_kuma-demo_svc_8080"),
            ("kuma.io/zone", "zone-1"),
            ("version", "v1"),
        ],
    )
    .unwrap()
}

/// A pool of CSRs made before measuring, so client key generation is not measured.
fn csr_pool(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let key = KeyPair::generate().unwrap();
            CertificateParams::default()
                .serialize_request(&key)
                .unwrap()
                .der()
                .to_vec()
        })
        .collect()
}

fn bench_backend(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    fixture: &dyn Fixture,
) {
    let ca = rt.block_on(fixture.backend(
        &MeshName::new("default").unwrap(),
        DEFAULT_DP_CERT_EXPIRATION,
    ));
    let ca: &dyn CertificateAuthority = ca.as_ref();
    let pool = csr_pool(64);
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("issue_from_csr", |b| {
        b.iter(|| {
            i = (i + 1) % pool.len();
            let p = IssueParams::new(
                identity(),
                KeySource::Csr(&pool[i]),
                DEFAULT_DP_CERT_EXPIRATION,
            );
            black_box(rt.block_on(issue_certificate(ca, p)).unwrap())
        })
    });
    g.bench_function("issue_generated_p256", |b| {
        b.iter(|| {
            let p = IssueParams::new(
                identity(),
                KeySource::Generate(KeyType::EcdsaP256),
                DEFAULT_DP_CERT_EXPIRATION,
            );
            black_box(rt.block_on(issue_certificate(ca, p)).unwrap())
        })
    });
    g.finish();
}

fn issuance(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    bench_backend(c, &rt, "builtin_p256", &Builtin::p256());
    bench_backend(c, &rt, "builtin_rsa2048", &Builtin::rsa2048());
    bench_backend(
        c,
        &rt,
        "provided_intermediate_p384",
        &Provided::intermediate(),
    );
}

fn parts(c: &mut Criterion) {
    let mut g = c.benchmark_group("parts");
    let tpl =
        CommonNameTemplate::parse(r#"{{ tag "kuma.io/service" | replace "_" "-" }}.mesh"#).unwrap();
    let id = identity();
    g.bench_function("template_render", |b| {
        b.iter(|| black_box(tpl.render(&id).unwrap()))
    });
    g.bench_function("identity_and_sans", |b| b.iter(|| black_box(identity())));
    let pool = csr_pool(1);
    g.bench_function("csr_verify", |b| {
        b.iter(|| black_box(ca_core::x509::verify_csr(&pool[0], &[]).unwrap()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = issuance, parts
}
criterion_main!(benches);
