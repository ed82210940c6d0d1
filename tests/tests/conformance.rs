//! The conformance suite, once per backend. A new backend adds one line here (acmpca's is in
//! `acmpca.rs`, next to its other moto tests).

use meshca_tests::fixtures::{Builtin, Provided};
use meshca_tests::vault::{Auth, Vault};

meshca_tests::conformance_suite!(builtin_p256, Builtin::p256());
meshca_tests::conformance_suite!(builtin_rsa2048, Builtin::rsa2048());
meshca_tests::conformance_suite!(provided_root, Provided::root());
meshca_tests::conformance_suite!(provided_intermediate, Provided::intermediate());
meshca_tests::conformance_suite!(provided_short_lived, Provided::short_lived());
meshca_tests::conformance_suite!(vault_token_issue, Vault::issue(Auth::Token, "ec"));
meshca_tests::conformance_suite!(vault_token_sign, Vault::sign(Auth::Token));
meshca_tests::conformance_suite!(vault_cert_issue, Vault::issue(Auth::Cert, "rsa"));
meshca_tests::conformance_suite!(vault_cert_sign, Vault::sign(Auth::Cert));
meshca_tests::conformance_suite!(vault_aws_issue, Vault::issue(Auth::Aws, "ec"));
