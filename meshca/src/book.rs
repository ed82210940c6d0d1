//! The chapters of the book (`docs/src`) that hold Rust code, each the documentation of one item
//! here, so `cargo test -p meshca --doc` compiles and runs their examples against this crate and
//! they cannot drift from the API. Compiled only for doc tests (`#[cfg(doctest)]` in `lib.rs`).
//! `tests/tests/book.rs` fails when a chapter with a Rust code block is missing from this list.

/// `docs/src/library.md`: the control plane example (`meshca/examples/control_plane.rs`).
#[doc = include_str!("../../docs/src/library.md")]
pub struct Library;
