//! The file store (`meshca serve --store file`, the data directory's `secrets/`) runs the store
//! suite every SecretStore runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use ca_core::DirectorySecretStore;
use meshca_tests::checks::mesh;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_suite_passes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DirectorySecretStore::new(dir.path().join("secrets")).unwrap());
    meshca_tests::stores::conformance(store, &mesh("default")).await;
}
