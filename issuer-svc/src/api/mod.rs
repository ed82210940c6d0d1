//! The gRPC API `meshca.v1.Issuer`: who the caller is and what it may do ([`authz`]), the
//! service itself ([`service`]), bootstrap tokens ([`token`]), the mapping of domain values to messages ([`wire`]) and of errors
//! to status codes ([`status`]), and the protobuf codec ([`codec`]).

pub(crate) mod authz;
pub(crate) mod codec;
pub(crate) mod service;
pub(crate) mod status;
pub(crate) mod token;
pub(crate) mod watches;
pub(crate) mod wire;
