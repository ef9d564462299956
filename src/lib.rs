//! gaussmle: per-class Gaussian maximum likelihood and batched log-likelihood scoring.
//!
//! The core (`stats`, `score`, `labels`, `simd`, `threads`, `error`, `element`) is pure Rust
//! with no PyO3: ndarray views in, owned vectors or a [`error::GaussError`] out, tested by
//! `cargo test --no-default-features`. The `python` feature adds the one glue module.

pub mod element;
pub mod error;
pub mod exact;
pub mod labels;
pub mod score;
pub mod simd;
pub mod stats;
pub mod threads;

#[cfg(feature = "python")]
mod python;

#[cfg(test)]
mod core_tests;
