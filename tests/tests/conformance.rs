//! The conformance suite, once per backend. A new backend adds one line here (acmpca's is in
//! `acmpca.rs`, next to its other moto tests; vault's token and cert suites run against real
//! OpenBao in `openbao.rs`, only aws auth, which OpenBao lacks, against OpenBao behind the front).

use meshca_tests::fixtures::{Builtin, Provided};
use meshca_tests::vault::{Auth, Vault};

meshca_tests::conformance_suite!(builtin_p256, Builtin::p256());
meshca_tests::conformance_suite!(builtin_rsa2048, Builtin::rsa2048());
meshca_tests::conformance_suite!(provided_root, Provided::root());
meshca_tests::conformance_suite!(provided_intermediate, Provided::intermediate());
meshca_tests::conformance_suite!(provided_short_lived, Provided::short_lived());
meshca_tests::conformance_suite!(vault_aws_issue, Vault::issue(Auth::Aws, "ec"));
