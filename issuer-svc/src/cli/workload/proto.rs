//! The generated SPIFFE Workload API (`proto/spiffe/workload.proto`): messages and
//! `spiffe_workload_api_server`.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::enum_variant_names
)]

include!(concat!(env!("OUT_DIR"), "/_.rs"));
