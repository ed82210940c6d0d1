//! The conformance suite, once per backend. A new backend adds one line here.

use meshca_tests::fixtures::{Builtin, Provided};

meshca_tests::conformance_suite!(builtin_p256, Builtin::p256());
meshca_tests::conformance_suite!(builtin_rsa2048, Builtin::rsa2048());
meshca_tests::conformance_suite!(provided_root, Provided::root());
meshca_tests::conformance_suite!(provided_intermediate, Provided::intermediate());
meshca_tests::conformance_suite!(provided_short_lived, Provided::short_lived());
