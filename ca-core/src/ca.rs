//! The pre-split home of the trait and the issuance path, kept so that `ca_core::ca::...` paths
//! keep working. The items now live in the crate's private modules `authority` (the trait),
//! `bundle` ([`TrustBundle`]), `request` ([`IssueParams`], [`IssueRequest`], ...) and `issue`
//! ([`issue_certificate`], [`check_issued`], [`validate`]), and are re-exported at the crate root.

pub use crate::authority::CertificateAuthority;
pub use crate::bundle::{ChainUsage, TrustBundle};
pub use crate::error::IssuedProblem;
pub use crate::issue::{
    check_issued, issue_certificate, validate, IssuedCertificate, TestCertificate, TEST_SERVICE,
};
pub use crate::request::{
    IdempotencyKey, IssueParams, IssueRequest, KeySource, UncheckedCertificate,
};
