//! Batched scoring of rows against one diagonal Gaussian per class.
//!
//! `jll[n, c] = k_c − Σ_d (x[n, d] − μ[c, d])² · h[c, d]` with `k_c = log prior_c −
//! ½ Σ_d log(2π var[c, d])` and `h = 1/(2 var)`, both precomputed in f64 by [`Scorer::new`].
//!
//! Numerics: the subtract-first form has a relative error of a few `u` per term whatever
//! `|μ|/σ` is (ALGORITHMS.md §2); the GEMM expansion `x²h − 2xμh + μ²h` would lose every digit
//! when `|μ|/σ` is large. Input of either float type is widened to f64 exactly while packing,
//! so float32 input is scored with the same f64 error bound: `|error| ≤ (d + 3)·u·(|k_c| +
//! Σ_d (x − μ)² h)` with `u = 2⁻⁵³`, before the final rounding to the output dtype.
//!
//! Layout (a GEMM-like micro-kernel, after Goto & van de Geijn 2008): a tile of `R` rows is
//! packed transposed (`[d][R]`, f64) into an L1 buffer, so the loop vectorises over rows for any
//! `d` and `C`; parameters are stored in class blocks of `K` (`[C/K][d][K]`) and broadcast, and
//! `K × R` accumulators stay in registers. Packing also widens f32, reads any strides (the
//! Fortran case copies whole column segments) and checks finiteness, all in the same read.
//! Consumers (jll, predict, log-proba, proba) finish each tile while it is in cache; predict
//! never writes the n × C matrix.

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::element::Element;
use crate::error::{GaussError, Result};
use crate::simd::{SimdLevel, madd};
use crate::simd_dispatch;
use crate::threads::run_in_pool;

/// Classes per parameter block (accumulators per row vector in the micro-kernel).
const CLASS_BLOCK: usize = 4;

/// Serial below this many (row × class × feature) terms: the pool hand-off costs more.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// Precomputed, immutable scoring parameters; safe to share between threads.
#[derive(Debug, Clone)]
pub struct Scorer {
    n_classes: usize,
    n_features: usize,
    /// `k_c` per class, padded to a multiple of `CLASS_BLOCK` with −inf.
    log_norm: Vec<f64>,
    /// Means in `[C/K][d][K]` blocks (padding 0).
    mean_blocked: Vec<f64>,
    /// `1/(2 var)` in `[C/K][d][K]` blocks (padding 0).
    half_inv_var_blocked: Vec<f64>,
}

/// What to write for each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatrixKind {
    /// The joint log-likelihood.
    JointLogLikelihood,
    /// Log posterior probabilities (jll minus the row's log-sum-exp).
    LogProba,
    /// Posterior probabilities (each row sums to 1).
    Proba,
}

impl Scorer {
    /// Validate `mean`, `var` (C × d) and `log_prior` (C) and precompute the kernel's constants.
    ///
    /// `var` must be finite and > 0. `log_prior` may be −inf (a class that is never predicted)
    /// but not NaN or +inf, and at least one class must have a finite log prior.
    pub fn new(
        mean: ArrayView2<'_, f64>,
        var: ArrayView2<'_, f64>,
        log_prior: ArrayView1<'_, f64>,
    ) -> Result<Scorer> {
        let (n_classes, n_features) = mean.dim();
        if var.dim() != mean.dim() || log_prior.len() != n_classes {
            return Err(GaussError::ShapeMismatch {
                what: format!(
                    "mean is {:?}, var is {:?} and log_prior has {} entries; expected \
                     (n_classes, n_features), the same, and n_classes",
                    mean.dim(),
                    var.dim(),
                    log_prior.len()
                ),
            });
        }
        if n_classes == 0 {
            return Err(GaussError::BadParameter {
                what: "there must be at least one class".into(),
            });
        }
        for ((c, j), &m) in mean.indexed_iter() {
            if !m.is_finite() {
                return Err(GaussError::BadParameter {
                    what: format!("mean must be finite; got {m} for class {c}, feature {j}"),
                });
            }
        }
        for ((class, feature), &value) in var.indexed_iter() {
            if !(value.is_finite() && value > 0.0) {
                return Err(GaussError::BadVariance {
                    class,
                    feature,
                    value,
                });
            }
        }
        if let Some(p) = log_prior
            .iter()
            .find(|p| p.is_nan() || **p == f64::INFINITY)
        {
            return Err(GaussError::BadParameter {
                what: format!("log_prior must be < +inf and not NaN; got {p}"),
            });
        }
        if !log_prior.iter().any(|p| p.is_finite()) {
            return Err(GaussError::BadParameter {
                what: "at least one class must have a finite log prior".into(),
            });
        }
        let padded = n_classes.div_ceil(CLASS_BLOCK) * CLASS_BLOCK;
        let log_two_pi = (2.0 * std::f64::consts::PI).ln();
        let mut log_norm = vec![f64::NEG_INFINITY; padded];
        for c in 0..n_classes {
            let log_det: f64 = var.row(c).iter().map(|v| v.ln()).sum();
            log_norm[c] = log_prior[c] - 0.5 * (log_det + n_features as f64 * log_two_pi);
            if log_norm[c] == f64::INFINITY {
                return Err(GaussError::Overflow {
                    what: "the log normalising constant".into(),
                });
            }
        }
        let mut mean_blocked = vec![0.0; padded * n_features];
        let mut half_inv_var_blocked = vec![0.0; padded * n_features];
        for c in 0..n_classes {
            let (block, lane) = (c / CLASS_BLOCK, c % CLASS_BLOCK);
            for j in 0..n_features {
                let at = (block * n_features + j) * CLASS_BLOCK + lane;
                mean_blocked[at] = mean[[c, j]];
                half_inv_var_blocked[at] = 0.5 / var[[c, j]];
            }
        }
        Ok(Scorer {
            n_classes,
            n_features,
            log_norm,
            mean_blocked,
            half_inv_var_blocked,
        })
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Number of features.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    fn check_x<E: Element>(&self, x: &ArrayView2<'_, E>) -> Result<()> {
        if x.ncols() != self.n_features {
            return Err(GaussError::ShapeMismatch {
                what: format!(
                    "X has {} features, but the model was fitted with {} features",
                    x.ncols(),
                    self.n_features
                ),
            });
        }
        Ok(())
    }

    /// Fill `out` (n × C, any strides) with the jll, log-probabilities or probabilities of `x`.
    pub fn score_into<E: Element, T: Element>(
        &self,
        x: ArrayView2<'_, E>,
        mut out: ArrayViewMut2<'_, T>,
        kind: MatrixKind,
        n_threads: usize,
        level: SimdLevel,
    ) -> Result<()> {
        self.check_x(&x)?;
        if out.dim() != (x.nrows(), self.n_classes) {
            return Err(GaussError::ShapeMismatch {
                what: format!(
                    "out has shape {:?}; expected ({}, {})",
                    out.dim(),
                    x.nrows(),
                    self.n_classes
                ),
            });
        }
        let rows = self.rows_per_chunk(x.nrows(), n_threads);
        let chunks: Vec<_> = x
            .axis_chunks_iter(Axis(0), rows)
            .zip(out.axis_chunks_iter_mut(Axis(0), rows))
            .enumerate()
            .collect();
        let run = |(k, (xc, mut oc)): (usize, (ArrayView2<'_, E>, ArrayViewMut2<'_, T>))| {
            let mut emit = |row0: usize, valid: usize, lanes: usize, scores: &[f64]| {
                emit_matrix(self, kind, &mut oc, k * rows, row0, valid, lanes, scores)
            };
            self.for_each_tile(xc, k * rows, level, &mut emit)
        };
        run_chunks(chunks, n_threads, run)
    }

    /// Index of the most likely class of each row (first on ties) into `out`.
    pub fn predict_into<E: Element>(
        &self,
        x: ArrayView2<'_, E>,
        mut out: ArrayViewMut1<'_, i64>,
        n_threads: usize,
        level: SimdLevel,
    ) -> Result<()> {
        self.check_x(&x)?;
        if out.len() != x.nrows() {
            return Err(GaussError::ShapeMismatch {
                what: format!("out has {} entries; expected {}", out.len(), x.nrows()),
            });
        }
        let rows = self.rows_per_chunk(x.nrows(), n_threads);
        let chunks: Vec<_> = x
            .axis_chunks_iter(Axis(0), rows)
            .zip(out.axis_chunks_iter_mut(Axis(0), rows))
            .enumerate()
            .collect();
        let run = |(k, (xc, mut oc)): (usize, (ArrayView2<'_, E>, ArrayViewMut1<'_, i64>))| {
            let mut emit = |row0: usize, valid: usize, lanes: usize, scores: &[f64]| {
                for r in 0..valid {
                    let (best, best_score) = argmax_row(scores, self.n_classes, lanes, r);
                    if best_score == f64::NEG_INFINITY {
                        return Err(GaussError::NoFiniteLikelihood {
                            row: k * rows + row0 + r,
                        });
                    }
                    oc[row0 + r] = best as i64;
                }
                Ok(())
            };
            self.for_each_tile(xc, k * rows, level, &mut emit)
        };
        run_chunks(chunks, n_threads, run)
    }

    /// Rows per parallel chunk: whole tiles, about 4 chunks per thread for balance; one chunk
    /// when the work is too small to be worth the pool.
    fn rows_per_chunk(&self, n_rows: usize, n_threads: usize) -> usize {
        let work = n_rows
            .saturating_mul(self.n_classes)
            .saturating_mul(self.n_features.max(1));
        if n_threads <= 1 || work < PARALLEL_MIN_WORK {
            return n_rows.max(1);
        }
        let per = n_rows.div_ceil(4 * n_threads);
        per.div_ceil(64).max(1) * 64
    }

    fn for_each_tile<E: Element>(
        &self,
        x: ArrayView2<'_, E>,
        row_offset: usize,
        level: SimdLevel,
        emit: &mut dyn FnMut(usize, usize, usize, &[f64]) -> Result<()>,
    ) -> Result<()> {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn avx2<E: Element>(
            s: &Scorer,
            x: ArrayView2<'_, E>,
            o: usize,
            e: &mut dyn FnMut(usize, usize, usize, &[f64]) -> Result<()>,
        ) -> Result<()> {
            tiles::<E, 8, true>(s, x, o, e)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
        fn avx512<E: Element>(
            s: &Scorer,
            x: ArrayView2<'_, E>,
            o: usize,
            e: &mut dyn FnMut(usize, usize, usize, &[f64]) -> Result<()>,
        ) -> Result<()> {
            tiles::<E, 16, true>(s, x, o, e)
        }
        simd_dispatch!(
            level,
            tiles::<E, 8, false>(self, x, row_offset, emit),
            avx2(self, x, row_offset, emit),
            avx512(self, x, row_offset, emit)
        )
    }
}

fn run_chunks<I: Send>(
    chunks: Vec<I>,
    n_threads: usize,
    run: impl Fn(I) -> Result<()> + Sync + Send,
) -> Result<()> {
    if chunks.len() <= 1 || n_threads <= 1 {
        return chunks.into_iter().try_for_each(run);
    }
    let results: Vec<Result<()>> =
        run_in_pool(n_threads, || chunks.into_par_iter().map(&run).collect());
    // The first failing chunk in row order, so the reported position does not depend on timing.
    results.into_iter().collect()
}

/// (class, score) of the best class of tile row `r`; the first one on ties.
#[inline]
fn argmax_row(scores: &[f64], n_classes: usize, lanes: usize, r: usize) -> (usize, f64) {
    let mut best = 0;
    let mut best_score = scores[r];
    for c in 1..n_classes {
        let s = scores[c * lanes + r];
        if s > best_score {
            best = c;
            best_score = s;
        }
    }
    (best, best_score)
}

#[allow(clippy::too_many_arguments)]
fn emit_matrix<T: Element>(
    scorer: &Scorer,
    kind: MatrixKind,
    out: &mut ArrayViewMut2<'_, T>,
    chunk_offset: usize,
    row0: usize,
    valid: usize,
    lanes: usize,
    scores: &[f64],
) -> Result<()> {
    let n_classes = scorer.n_classes;
    for r in 0..valid {
        let mut row = out.row_mut(row0 + r);
        let at = |c: usize| scores[c * lanes + r];
        match kind {
            MatrixKind::JointLogLikelihood => {
                for (c, o) in row.iter_mut().enumerate() {
                    *o = T::from_f64(at(c));
                }
            }
            MatrixKind::LogProba | MatrixKind::Proba => {
                let (_, max) = argmax_row(scores, n_classes, lanes, r);
                if max == f64::NEG_INFINITY {
                    return Err(GaussError::NoFiniteLikelihood {
                        row: chunk_offset + row0 + r,
                    });
                }
                // Max-shifted log-sum-exp: every exponent is ≤ 0, the largest is exactly 0, so
                // the sum is in [1, C] and nothing overflows even when jll ≈ −1e300.
                let total: f64 = (0..n_classes).map(|c| (at(c) - max).exp()).sum();
                if kind == MatrixKind::Proba {
                    let inv = 1.0 / total;
                    for (c, o) in row.iter_mut().enumerate() {
                        *o = T::from_f64((at(c) - max).exp() * inv);
                    }
                } else {
                    let shift = max + total.ln();
                    for (c, o) in row.iter_mut().enumerate() {
                        *o = T::from_f64(at(c) - shift);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Score `x` tile by tile: pack `R` rows, run the micro-kernel, hand the tile to `emit`.
#[inline(always)]
fn tiles<E: Element, const R: usize, const FMA: bool>(
    scorer: &Scorer,
    x: ArrayView2<'_, E>,
    row_offset: usize,
    emit: &mut dyn FnMut(usize, usize, usize, &[f64]) -> Result<()>,
) -> Result<()> {
    let (n, d) = x.dim();
    let padded = scorer.log_norm.len();
    let mut packed = vec![0.0f64; d.max(1) * R];
    let mut scores = vec![0.0f64; padded * R];
    let mut row0 = 0;
    while row0 < n {
        let valid = R.min(n - row0);
        if !pack_tile::<E, R>(x, row0, valid, &mut packed) {
            return Err(locate_non_finite(x, row0, valid, row_offset));
        }
        tile_kernel::<R, FMA>(scorer, &packed, &mut scores);
        emit(row0, valid, R, &scores)?;
        row0 += R;
    }
    Ok(())
}

/// Copy rows `row0..row0+valid` of `x` into `packed` as `[d][R]` f64 (rows beyond `valid` are
/// zero). Returns false if any value is NaN or infinite.
#[inline(always)]
fn pack_tile<E: Element, const R: usize>(
    x: ArrayView2<'_, E>,
    row0: usize,
    valid: usize,
    packed: &mut [f64],
) -> bool {
    let d = x.ncols();
    // v·0 is 0 for finite v and NaN for NaN/±inf; the sum stays 0 exactly when all are finite.
    let mut poison = 0.0f64;
    let tile = x.slice(ndarray::s![row0..row0 + valid, ..]);
    if valid < R {
        packed.fill(0.0);
    }
    if x.strides()[0] == 1 && d > 1 {
        // Fortran order: each column segment is contiguous.
        for (j, col) in tile.axis_iter(Axis(1)).enumerate() {
            let dst = &mut packed[j * R..j * R + valid];
            match col.to_slice() {
                Some(src) => {
                    for (p, &v) in dst.iter_mut().zip(src) {
                        *p = v.to_f64();
                        poison += *p * 0.0;
                    }
                }
                None => {
                    for (p, &v) in dst.iter_mut().zip(col.iter()) {
                        *p = v.to_f64();
                        poison += *p * 0.0;
                    }
                }
            }
        }
    } else {
        for (r, row) in tile.axis_iter(Axis(0)).enumerate() {
            match row.to_slice() {
                Some(src) => {
                    for (j, &v) in src.iter().enumerate() {
                        let f = v.to_f64();
                        packed[j * R + r] = f;
                        poison += f * 0.0;
                    }
                }
                None => {
                    for (j, &v) in row.iter().enumerate() {
                        let f = v.to_f64();
                        packed[j * R + r] = f;
                        poison += f * 0.0;
                    }
                }
            }
        }
    }
    poison == 0.0
}

fn locate_non_finite<E: Element>(
    x: ArrayView2<'_, E>,
    row0: usize,
    valid: usize,
    row_offset: usize,
) -> GaussError {
    for r in row0..row0 + valid {
        for (col, v) in x.row(r).iter().enumerate() {
            let value = v.to_f64();
            if !value.is_finite() {
                return GaussError::NonFinite {
                    what: "X",
                    row: row_offset + r,
                    col,
                    value,
                };
            }
        }
    }
    GaussError::NonFinite {
        what: "X",
        row: row_offset + row0,
        col: 0,
        value: f64::NAN,
    }
}

/// The register-blocked micro-kernel: `scores[c][r] = k_c − Σ_j (x[j][r] − μ[c][j])² h[c][j]`
/// for every (padded) class `c` and tile row `r`.
#[inline(always)]
fn tile_kernel<const R: usize, const FMA: bool>(
    scorer: &Scorer,
    packed: &[f64],
    scores: &mut [f64],
) {
    let d = scorer.n_features;
    let blocks = scorer.log_norm.len() / CLASS_BLOCK;
    for b in 0..blocks {
        let mut acc = [[0.0f64; R]; CLASS_BLOCK];
        let span = b * d * CLASS_BLOCK..(b + 1) * d * CLASS_BLOCK;
        let means = &scorer.mean_blocked[span.clone()];
        let weights = &scorer.half_inv_var_blocked[span];
        for ((xs, ms), hs) in packed
            .chunks_exact(R)
            .take(d)
            .zip(means.chunks_exact(CLASS_BLOCK))
            .zip(weights.chunks_exact(CLASS_BLOCK))
        {
            for k in 0..CLASS_BLOCK {
                let (m, h) = (ms[k], hs[k]);
                for r in 0..R {
                    let t = xs[r] - m;
                    acc[k][r] = madd::<FMA>(t * h, t, acc[k][r]);
                }
            }
        }
        for (k, lane_acc) in acc.iter().enumerate() {
            let c = b * CLASS_BLOCK + k;
            let k_c = scorer.log_norm[c];
            for (s, a) in scores[c * R..(c + 1) * R].iter_mut().zip(lane_acc) {
                *s = k_c - a;
            }
        }
    }
}
