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
//! never writes the n × C matrix. The whole tile loop, sink included, is monomorphised per SIMD
//! level inside one `#[target_feature]` function, with explicit vector accumulators
//! ([`crate::simd::Lanes`]); proba uses the branch-free [`crate::simd::exp_nonpositive`]
//! (≤ 2 ulp, against libm's ≤ 1), negligible next to the `u·|jll|` error of `jll − max`.

use ndarray::{ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::element::Element;
use crate::error::{GaussError, Result};
use crate::exact;
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2Lanes, Avx512Lanes};
use crate::simd::{
    Lanes, ScalarLanes, SimdLevel, exp_nonpositive, ln_1p_nonnegative, load_widened, prefetch_l2,
    transpose_block,
};
use crate::simd_dispatch;
use crate::threads::run_in_pool;
use num_bigint::BigInt;

/// Classes per parameter block (accumulators per row vector in the micro-kernel).
const CLASS_BLOCK: usize = 4;

/// The rows of `x` are prefetched up to this many tiles ahead, and at most about
/// `PREFETCH_BYTES` of `x` ahead (so that wide rows stay in L2 until they are packed).
const PREFETCH_TILES: usize = 12;
const PREFETCH_BYTES: usize = 96 << 10;

/// Serial below this many (row × class × feature) terms: the pool hand-off costs more.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// Precomputed, immutable scoring parameters; safe to share between threads.
#[derive(Debug, Clone)]
pub struct Scorer {
    n_classes: usize,
    n_features: usize,
    /// `k_c` per class (correctly rounded from a double-double value), padded to a multiple
    /// of `CLASS_BLOCK` with −inf.
    log_norm: Vec<f64>,
    /// `k_c − log_norm[c]` (the low half of the double-double `k_c`; 0 for −inf and padding).
    log_norm_lo: Vec<f64>,
    /// Means in `[C/K][d][K]` blocks (padding 0).
    mean_blocked: Vec<f64>,
    /// `1/(2 var)` in `[C/K][d][K]` blocks (padding 0).
    half_inv_var_blocked: Vec<f64>,
    /// `1/(2 var) − half_inv_var` (the low half of its double-double value), `[C][d]`.
    half_inv_var_lo: Vec<f64>,
    /// Means, `[C][d]` (the compensated posterior path reads one class at a time).
    mean_rows: Vec<f64>,
    /// `1/(2 var)` rounded, `[C][d]`.
    half_inv_var_rows: Vec<f64>,
    /// Variances, `[C][d]` (the exact tier divides by them).
    var_rows: Vec<f64>,
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
    /// `var` must be finite and > 0, and at least `f64::MIN_POSITIVE` (2.2250738585072014e-308,
    /// the smallest normal float64): a subnormal variance is rejected with a `BadParameter`
    /// error (a ValueError in Python) that states this bound, because `1/(2 var)` would be
    /// infinite (for var < 0.5/f64::MAX) or lose digits. `log_prior` may be −inf (a class that
    /// is never predicted) but not NaN or +inf, and at least one class must have a finite log
    /// prior.
    ///
    /// `k_c` and `1/(2 var)` are computed in double-double (≈ 2⁻¹⁰⁶ relative) and stored as
    /// the rounded value plus its low part: the SIMD kernel uses the former, the exact
    /// fallback for log-proba/proba (see [`MatrixSink`]) both.
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
            if value < f64::MIN_POSITIVE {
                return Err(GaussError::BadParameter {
                    what: format!(
                        "variance must be >= {:e} (the smallest normal float64; the \
                         smallest supported variance); got {value:e} for class {class}, \
                         feature {feature}",
                        f64::MIN_POSITIVE
                    ),
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
        let mut log_norm = vec![f64::NEG_INFINITY; padded];
        let mut log_norm_lo = vec![0.0; padded];
        for c in 0..n_classes {
            if log_prior[c] == f64::NEG_INFINITY {
                continue;
            }
            // k_c = log prior − ½ (Σ_d log var + d·log 2π), all in double-double.
            let log_det = ln_product_dd(var.row(c).iter().copied());
            let total = log_det.add(LN_2PI.mul_f(n_features as f64));
            let k = Dd::from(log_prior[c]).add(total.mul_f(-0.5));
            if !k.hi.is_finite() {
                return Err(GaussError::Overflow {
                    what: "the log normalising constant".into(),
                });
            }
            (log_norm[c], log_norm_lo[c]) = (k.hi, k.lo);
        }
        let mut mean_blocked = vec![0.0; padded * n_features];
        let mut half_inv_var_blocked = vec![0.0; padded * n_features];
        let mut half_inv_var_lo = vec![0.0; n_classes * n_features];
        for c in 0..n_classes {
            let (block, lane) = (c / CLASS_BLOCK, c % CLASS_BLOCK);
            for j in 0..n_features {
                let at = (block * n_features + j) * CLASS_BLOCK + lane;
                let v = var[[c, j]];
                let h = 0.5 / v;
                mean_blocked[at] = mean[[c, j]];
                half_inv_var_blocked[at] = h;
                // 0.5 − h·v is exact (the remainder of a correctly rounded division).
                half_inv_var_lo[c * n_features + j] = (-h).mul_add(v, 0.5) / v;
            }
        }
        let mean_rows = mean.iter().copied().collect();
        let half_inv_var_rows = var.iter().map(|&v| 0.5 / v).collect();
        let var_rows = var.iter().copied().collect();
        Ok(Scorer {
            n_classes,
            n_features,
            log_norm,
            log_norm_lo,
            mean_blocked,
            half_inv_var_blocked,
            half_inv_var_lo,
            mean_rows,
            half_inv_var_rows,
            var_rows,
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
        let gamma = (2.5 + (self.n_features as f64).sqrt()) * UNIT_ROUNDOFF;
        let rigorous = (self.n_features as f64 + 8.0) / (2.5 + (self.n_features as f64).sqrt());
        let p_err: Vec<f64> = self.log_norm[..self.n_classes]
            .iter()
            .map(|&k| {
                if k.is_finite() {
                    UNIT_ROUNDOFF.mul_add(k.abs(), gamma * k)
                } else {
                    0.0
                }
            })
            .collect();
        let rows = self.rows_per_chunk(x.nrows(), n_threads);
        let chunks: Vec<_> = x
            .axis_chunks_iter(Axis(0), rows)
            .zip(out.axis_chunks_iter_mut(Axis(0), rows))
            .enumerate()
            .collect();
        let run = |(k, (xc, mut oc)): (usize, (ArrayView2<'_, E>, ArrayViewMut2<'_, T>))| {
            let mut sink = MatrixSink {
                kind,
                out: &mut oc,
                chunk_offset: k * rows,
                n_classes: self.n_classes,
                scorer: self,
                gamma,
                rigorous,
                rtol: if std::mem::size_of::<T>() == 4 {
                    POSTERIOR_RTOL_F32_OUT
                } else {
                    POSTERIOR_RTOL
                },
                p_err: p_err.clone(),
                scratch: Vec::new(),
                row: Vec::new(),
                row_err: Vec::new(),
                staged: Vec::new(),
            };
            self.for_each_tile(xc, k * rows, level, &mut sink)
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
        let (gamma, k_max, k_err) = PredictSink::certainty(self);
        let run = |(k, (xc, mut oc)): (usize, (ArrayView2<'_, E>, ArrayViewMut1<'_, i64>))| {
            let mut sink = PredictSink {
                out: &mut oc,
                chunk_offset: k * rows,
                n_classes: self.n_classes,
                scorer: self,
                gamma,
                k_max,
                k_err,
            };
            self.for_each_tile(xc, k * rows, level, &mut sink)
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

    fn for_each_tile<E: Element, S: TileSink>(
        &self,
        x: ArrayView2<'_, E>,
        row_offset: usize,
        level: SimdLevel,
        sink: &mut S,
    ) -> Result<()> {
        // The whole tile loop (packing, micro-kernel and the sink's finishing loops) is
        // monomorphised per level inside one `#[target_feature]` function.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn avx2<E: Element, S: TileSink>(
            s: &Scorer,
            x: ArrayView2<'_, E>,
            o: usize,
            sink: &mut S,
        ) -> Result<()> {
            if x.nrows() <= Avx2Lanes::LANES {
                tiles::<E, S, Avx2Lanes, 1, 4>(s, x, o, sink)
            } else {
                tiles::<E, S, Avx2Lanes, 2, 8>(s, x, o, sink)
            }
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
        fn avx512<E: Element, S: TileSink>(
            s: &Scorer,
            x: ArrayView2<'_, E>,
            o: usize,
            sink: &mut S,
        ) -> Result<()> {
            // A batch of a few rows gets one-vector tiles: a full tile would compute (and pack,
            // and allocate) 32 rows for each real one, 24 µs for one row at d = 784, C = 10.
            if x.nrows() <= Avx512Lanes::LANES {
                tiles::<E, S, Avx512Lanes, 1, 8>(s, x, o, sink)
            } else {
                tiles::<E, S, Avx512Lanes, 4, 32>(s, x, o, sink)
            }
        }
        simd_dispatch!(
            level,
            tiles::<E, S, ScalarLanes, 4, 4>(self, x, row_offset, sink),
            // SAFETY: simd_dispatch! evaluates each arm only on a CPU with its features.
            unsafe { avx2(self, x, row_offset, sink) },
            // SAFETY: as above.
            unsafe { avx512(self, x, row_offset, sink) }
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

/// What to do with each scored tile. Implementations are `#[inline(always)]` so that their
/// loops are compiled inside the SIMD level's `#[target_feature]` function.
trait TileSink {
    /// `scores[c * R + r]` is the jll of class `c` (padded to a multiple of `CLASS_BLOCK`) for
    /// tile row `r`; rows `valid..R` are padding. `packed[j * R + r]` is feature `j` of tile
    /// row `r` (exact f64). The sink may overwrite `scores`.
    fn tile<L: Lanes, const R: usize>(
        &mut self,
        row0: usize,
        valid: usize,
        packed: &[f64],
        scores: &mut [f64],
    ) -> Result<()>;

    /// Start and length in bytes of the output of rows `row0..row0 + rows` when it is one
    /// contiguous run (for prefetching; never dereferenced).
    fn out_span(&self, row0: usize, rows: usize) -> Option<(*const u8, usize)>;

    /// The error [`TileSink::tile`] would report for tile rows `0..rows`, without writing
    /// anything: used when a later row of the tile holds a non-finite value, so that the first
    /// bad row in row order is reported whatever the tile size (SIMD level, batch size).
    fn check_rows<const R: usize>(&self, row0: usize, rows: usize, scores: &[f64]) -> Result<()>;
}

/// The first of tile rows `0..rows` whose jll is −inf for every class (`None` if none is).
#[inline(always)]
fn zero_likelihood_row<const R: usize>(
    scores: &[f64],
    n_classes: usize,
    rows: usize,
) -> Option<usize> {
    (0..rows).find(|&r| (0..n_classes).all(|c| lane_row::<R>(scores, c)[r] == f64::NEG_INFINITY))
}

/// The first of `values[..valid]` that is −inf: a branch-free test of all `R` lanes first (it
/// vectorises; an early-exit search over the tile cost ~8% of two-class posteriors at d = 2),
/// then the search only when one is.
#[inline(always)]
fn first_negative_infinity<const R: usize>(values: &[f64; R], valid: usize) -> Option<usize> {
    let any = values
        .iter()
        .fold(false, |any, &v| any | (v == f64::NEG_INFINITY));
    if any {
        values[..valid].iter().position(|&v| v == f64::NEG_INFINITY)
    } else {
        None
    }
}

/// A fixed-size view of tile row-vector `c` of `scores`.
#[inline(always)]
fn lane_row<const R: usize>(scores: &[f64], c: usize) -> &[f64; R] {
    // In bounds: callers index classes below `scores.len() / R`.
    scores[c * R..(c + 1) * R]
        .try_into()
        .unwrap_or_else(|_| unreachable!())
}

#[inline(always)]
fn lane_row_mut<const R: usize>(scores: &mut [f64], c: usize) -> &mut [f64; R] {
    (&mut scores[c * R..(c + 1) * R])
        .try_into()
        .unwrap_or_else(|_| unreachable!())
}

/// Unit roundoff of f64, `u = 2⁻⁵³`.
const UNIT_ROUNDOFF: f64 = f64::EPSILON / 2.0;

/// Relative accuracy the fast log-proba/proba path must reach by its error estimate; rows
/// that miss it are recomputed in double-double. Half the 1e-12 target (margin for the final
/// exp/log1p/division roundings, a few u). At 2e-13 most rows of fitted C = 100, d = 64 data
/// (|J| ≈ 200) took the slow path and log-proba ran 8× slower than jll; at 5e-13 rows with
/// |J| up to ~400 at d = 64 stay on the fast path.
const POSTERIOR_RTOL: f64 = 5e-13;

/// The same for float32 output: 2⁻³⁰, a 1/64 of float32's half-ulp, so the result stays within
/// about 0.52 float32 ulp of the exact value after the final rounding; the 5e-13 of float64
/// output would send every row of high-dimensional data to the slower tiers for digits the
/// float32 result cannot hold.
const POSTERIOR_RTOL_F32_OUT: f64 = 1.0 / (1u64 << 30) as f64;

/// Whether a loser whose rounded `exp(D_c)` is subnormal or zero must still meet the proba
/// tolerance: it may be exempt only if its exact `D_c` keeps `p_c ≤ exp(D_c)` below float64's
/// normal range; otherwise a large error may hide a winner. (Exempting every underflowing loser
/// gave p = 1 to the wrong class for rows 1e10 from classes whose variances differ by a few
/// ulps: jll error ~1e6, gap 1.2e4.) The error estimate of [`MatrixSink`],
/// `P_c + γ|D_c| + Z` (with `γ|D_c|` in full; the tolerance check clamps it), assumes that
/// roundings partly cancel (`√d`); here it is scaled by `rigorous = (d + 8)/(2.5 + √d)` to the
/// worst case, since one dominant term per class can make the sum drop up to `d` half-ulps
/// of it (a reviewer's row at 2^31 with d = 64 had an error of 15360 against an estimate of
/// 5376, and p = 1 went to the wrong class). Only rows with a loser just below
/// `ln(MIN_POSITIVE)` ever see the difference. A NaN sum (`D_c = −inf`: a class of zero
/// likelihood) is exempt.
#[inline(always)]
fn surely_subnormal_fails<L: Lanes>(
    shifted: f64,
    gamma: f64,
    p_c: f64,
    z: f64,
    rigorous: f64,
) -> bool {
    fma::<L>(rigorous, fma::<L>(gamma, -shifted, p_c) + z, shifted) > LN_MIN_POSITIVE
}

/// `ln(f64::MIN_POSITIVE)`, rounded down (the next float64 below): at or below it `exp` is
/// subnormal.
const LN_MIN_POSITIVE: f64 = -708.396_418_532_264_2;

/// `a·b + c`, fused when the level has FMA (else a libm call would be slow).
#[inline(always)]
fn fma<L: Lanes>(a: f64, b: f64, c: f64) -> f64 {
    if L::FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Writes the jll, log-probabilities or probabilities of each tile into an n × C matrix.
///
/// Posteriors (H2): with `J` the row's jll, `m` its first maximum, `D_c = J_c − J_m` and
/// `rest = Σ_{c≠m} exp(D_c)`, `log p_c = D_c − log1p(rest)` and `p_c = exp(D_c) / (1 + rest)`
/// (for the winner `D_m = 0`), so the winner's `log p = −log1p(rest)` keeps its relative
/// accuracy however small it is.
///
/// Each `J_c` is stored in f64 and its error is estimated as
/// `E_c = u·|k_c| + γ·(k_c − J_c)`, `γ = (2.5 + √d)·u` (correctly rounded `k_c` and the final
/// rounding, ≤ 2u per quadratic term, and a d-term sum whose rounding errors grow like √d;
/// the rigorous worst case has `d` in place of `√d`). The error of `D_c` is then
/// `E_c + E_m`, and that of `log p_c` adds `Ew = Σ_{c≠m} exp(D_c)(E_c + E_m)/(1 + rest)`
/// (through log1p). A row is recomputed when, for some class, that absolute error exceeds
/// the tolerance (`rtol`: [`POSTERIOR_RTOL`], or 2⁻³⁰ for float32 output) times `|log p_c|`
/// (log-proba; `|log p_c| ≥ max(|D_c|, ln 2)` for a loser, `log1p(rest)` for the winner) or times 1 (proba, the relative error of `p_c`, for every
/// `p_c` that is not subnormal). The recomputation ([`MatrixSink::exact_row`]) evaluates every
/// class's quadratic sum `S_c` in double-double from the exact `x − μ` and the double-double
/// `1/(2 var)`, forms `D_c = (k_c − k_m) − (S_c − S_m)` in double-double (quadratics first)
/// and rounds once. Its error is about `d·u²·(S_c + S_m)` absolute: a few `u` relative for
/// any `|J|` up to ~10¹⁵·|D_c|, and exact when two classes share the same quadratic sum
/// (identical means and variances) however large it is. Beyond that (a row 1e12 from two
/// classes whose means differ by 1e-12 has |J| ~ 1e24 and an O(1) gap; a reviewer measured
/// p off by 5e-8 there, and by 1.5e-3 at 1e14), the gaps are formed in exact integer
/// arithmetic instead ([`MatrixSink::exact_gaps`], [`crate::exact`]). For ordinary data
/// (|J| up to ~10³) no row takes either path.
struct MatrixSink<'a, 'o, T: Element> {
    kind: MatrixKind,
    out: &'a mut ArrayViewMut2<'o, T>,
    chunk_offset: usize,
    n_classes: usize,
    scorer: &'a Scorer,
    /// `γ` of the error estimate above.
    gamma: f64,
    /// `(d + 8)/(2.5 + √d)`: scales the estimate to a rigorous bound ([`surely_subnormal_fails`]).
    rigorous: f64,
    /// Relative accuracy the posteriors must reach ([`POSTERIOR_RTOL`], or
    /// [`POSTERIOR_RTOL_F32_OUT`] for float32 output).
    rtol: f64,
    /// `P_c = u·|k_c| + γ·k_c` per class (0 for a class with log prior −inf).
    p_err: Vec<f64>,
    /// Double-double jll of one row (the compensated and exact paths).
    scratch: Vec<Dd>,
    /// One row of the tile, contiguous (the compensated path).
    row: Vec<f64>,
    /// Error estimate of each class's compensated jll (the compensated path).
    row_err: Vec<f64>,
    /// The tile transposed to `[r][c]` before it is copied to `out`.
    staged: Vec<f64>,
}

impl<T: Element> TileSink for MatrixSink<'_, '_, T> {
    #[inline(always)]
    fn out_span(&self, row0: usize, rows: usize) -> Option<(*const u8, usize)> {
        let c = self.n_classes;
        let p = self.out.as_slice()?.as_ptr().wrapping_add(row0 * c);
        Some((p.cast(), rows * c * std::mem::size_of::<T>()))
    }

    fn check_rows<const R: usize>(&self, row0: usize, rows: usize, scores: &[f64]) -> Result<()> {
        match (
            self.kind,
            zero_likelihood_row::<R>(scores, self.n_classes, rows),
        ) {
            (MatrixKind::LogProba | MatrixKind::Proba, Some(r)) => {
                Err(GaussError::NoFiniteLikelihood {
                    row: self.chunk_offset + row0 + r,
                })
            }
            _ => Ok(()),
        }
    }

    #[inline(always)]
    fn tile<L: Lanes, const R: usize>(
        &mut self,
        row0: usize,
        valid: usize,
        packed: &[f64],
        scores: &mut [f64],
    ) -> Result<()> {
        match self.kind {
            MatrixKind::JointLogLikelihood => {}
            MatrixKind::LogProba => self.posteriors::<L, R, false>(row0, valid, packed, scores)?,
            MatrixKind::Proba => self.posteriors::<L, R, true>(row0, valid, packed, scores)?,
        }
        write_rows::<L, T, R>(
            self.out,
            row0,
            valid,
            self.n_classes,
            scores,
            &mut self.staged,
        );
        Ok(())
    }
}

impl<T: Element> MatrixSink<'_, '_, T> {
    /// Turn the tile's jll into log-probabilities (`PROBA = false`) or probabilities, with the
    /// error check and exact fallback described at [`MatrixSink`].
    ///
    /// With `P_c = u·|k_c| + γ·k_c` and `J_c = J_m + D_c`, the error estimate of `D_c` is
    /// `E_c + E_m = P_c + γ·|D_c| + Z` with the row constant `Z = P_m − 2γ·J_m`; the per-class
    /// work is a few vector operations next to the exp.
    #[inline(always)]
    fn posteriors<L: Lanes, const R: usize, const PROBA: bool>(
        &mut self,
        row0: usize,
        valid: usize,
        packed: &[f64],
        scores: &mut [f64],
    ) -> Result<()> {
        let n_classes = self.n_classes;
        let p_err = &self.p_err[..n_classes];
        // The first maximum of each row, its class (as f64, to stay in vector lanes) and P.
        let mut max = [f64::NEG_INFINITY; R];
        let mut win = [0.0f64; R];
        let mut p_win = [0.0f64; R];
        for (c, &pc) in p_err.iter().enumerate() {
            let s = lane_row::<R>(scores, c);
            let cf = c as f64;
            for r in 0..R {
                let better = s[r] > max[r];
                max[r] = if better { s[r] } else { max[r] };
                win[r] = if better { cf } else { win[r] };
                p_win[r] = if better { pc } else { p_win[r] };
            }
        }
        if let Some(r) = first_negative_infinity(&max, valid) {
            return Err(GaussError::NoFiniteLikelihood {
                row: self.chunk_offset + row0 + r,
            });
        }
        let (gamma, rtol, rigorous) = (self.gamma, self.rtol, self.rigorous);
        // The row constant Z = E_m − γ·|max| of the error estimate (every D_c's error is
        // `P_c + γ|D_c| + Z`).
        let mut z = [0.0f64; R];
        for r in 0..R {
            z[r] = fma::<L>(-2.0 * gamma, max[r], p_win[r]);
        }
        // Max-shifted: every exponent is ≤ 0 and the winner's is exactly 0, so nothing
        // overflows even when jll ≈ −1e300.
        let mut rest = [0.0f64; R];
        // Σ_{c≠m} exp(D_c)·(P_c + γ|D_c|).
        let mut weighted_err = [0.0f64; R];
        // Max over losers of the class's share of `error − tolerance`.
        let mut worst = [f64::NEG_INFINITY; R];
        // Row blocks of (at most) 8 keep the per-row state in few registers.
        const W: usize = 8;
        let w = if R < W { R } else { W };
        if n_classes == 2 {
            // Two classes: one exp per row (the loser's), where the loop below also computes
            // the winner's exp(0) = 1; the same values, in the same order of operations.
            // Fixed-size rows, so that the loop vectorises (slices kept it scalar). The winner is
            // compared again rather than read from `win`/`max`: reading them made this loop 2.3×
            // slower (2e6×2×2 proba 10.7 → 25 ms).
            let (first, others) = scores.split_at_mut(R);
            let s0: &mut [f64; R] = first.try_into().unwrap_or_else(|_| unreachable!());
            let s1: &mut [f64; R] = (&mut others[..R])
                .try_into()
                .unwrap_or_else(|_| unreachable!());
            for r in 0..R {
                let one_wins = s1[r] > s0[r];
                let (top, low) = if one_wins {
                    (s1[r], s0[r])
                } else {
                    (s0[r], s1[r])
                };
                let pc = if one_wins { p_err[0] } else { p_err[1] };
                let shifted = low - top;
                let e = if L::FMA {
                    exp_nonpositive::<true>(shifted)
                } else {
                    exp_nonpositive::<false>(shifted)
                };
                rest[r] = e;
                let err = fma::<L>(gamma, -shifted.max(-746.0), pc);
                weighted_err[r] = fma::<L>(e, err, 0.0);
                worst[r] = if PROBA {
                    if e >= f64::MIN_POSITIVE
                        || surely_subnormal_fails::<L>(shifted, gamma, pc, z[r], rigorous)
                    {
                        err
                    } else {
                        f64::NEG_INFINITY
                    }
                } else {
                    fma::<L>(rtol - gamma, shifted.min(-std::f64::consts::LN_2), pc)
                };
                let (winner, loser) = if PROBA { (1.0, e) } else { (0.0, shifted) };
                s0[r] = if one_wins { loser } else { winner };
                s1[r] = if one_wins { winner } else { loser };
            }
        } else {
            // Every other class count. (A runtime bound on this loop, 0 for two classes, made
            // proba 1.6× slower at C = 10 and C = 100: the constant R keeps it unrolled.)
            for r0 in (0..R).step_by(w) {
                for (c, &pc) in p_err.iter().enumerate() {
                    let s = lane_row_mut::<R>(scores, c);
                    let cf = c as f64;
                    for r in r0..r0 + w {
                        let shifted = s[r] - max[r];
                        let e = if L::FMA {
                            exp_nonpositive::<true>(shifted)
                        } else {
                            exp_nonpositive::<false>(shifted)
                        };
                        let loser = cf != win[r];
                        let e_loser = if loser { e } else { 0.0 };
                        rest[r] += e_loser;
                        // P_c + γ|D_c| (|D_c| clamped where exp(D_c) = 0 anyway, to avoid 0·inf).
                        let err = fma::<L>(gamma, -shifted.max(-746.0), pc);
                        weighted_err[r] = fma::<L>(e_loser, err, weighted_err[r]);
                        let excess = if PROBA {
                            // Tolerance τ (relative error of p_c), for every p_c that is not
                            // surely subnormal.
                            if e_loser >= f64::MIN_POSITIVE
                                || (loser
                                    & surely_subnormal_fails::<L>(
                                        shifted, gamma, pc, z[r], rigorous,
                                    ))
                            {
                                err
                            } else {
                                f64::NEG_INFINITY
                            }
                        } else {
                            // Tolerance τ·max(|D_c|, ln 2) ≤ τ·|log p_c| (γ|D_c| folded in).
                            let d = shifted.min(-std::f64::consts::LN_2);
                            if loser {
                                fma::<L>(rtol - gamma, d, pc)
                            } else {
                                f64::NEG_INFINITY
                            }
                        };
                        worst[r] = if excess > worst[r] { excess } else { worst[r] };
                        // Proba keeps exp(jll − max); log-proba keeps jll − max.
                        s[r] = if PROBA { e } else { shifted };
                    }
                }
            }
        }
        // 1/(1 + rest) (proba's factor) and log1p(rest) (log-proba's shift).
        let mut inv = [0.0f64; R];
        let mut log1p_rest = [0.0f64; R];
        for r in 0..R {
            inv[r] = 1.0 / (1.0 + rest[r]);
            if !PROBA {
                // (jll − max) − log1p(rest): the winner gets −log1p(rest) at full relative
                // accuracy, and max + log Σ would round log Σ away when |max| ≈ 1e300.
                log1p_rest[r] = if L::FMA {
                    ln_1p_nonnegative::<true>(rest[r])
                } else {
                    ln_1p_nonnegative::<false>(rest[r])
                };
            }
        }
        // Which rows miss the tolerance: branch-free over the tile, so it vectorises; the bit
        // mask is built only when some row needs the slower tiers.
        let mut bad = [false; R];
        let mut any_bad = false;
        for r in 0..R {
            // Ew: the error that log1p(rest) (or the division by 1 + rest) passes on.
            let ew = fma::<L>(rest[r], z[r], weighted_err[r]) * inv[r];
            let miss = if PROBA {
                worst[r] + z[r] + ew > rtol
            } else {
                (worst[r] + z[r] + ew > 0.0) | (ew > rtol * log1p_rest[r])
            };
            bad[r] = miss & (r < valid);
            any_bad |= bad[r];
        }
        const { assert!(R <= 64) };
        let mut redo = 0u64;
        if any_bad {
            for (r, &b) in bad.iter().enumerate() {
                redo |= u64::from(b) << r;
            }
        }
        for c in 0..n_classes {
            let s = lane_row_mut::<R>(scores, c);
            for r in 0..R {
                s[r] = if PROBA {
                    s[r] * inv[r]
                } else {
                    s[r] - log1p_rest[r]
                };
            }
        }
        while redo != 0 {
            let r = redo.trailing_zeros() as usize;
            redo &= redo - 1;
            if !self.accurate_row::<L, R>(packed, r, scores, PROBA) {
                self.exact_row::<R>(packed, r, scores, PROBA);
            }
        }
        Ok(())
    }

    /// Middle tier between the fast path and [`Self::exact_row`]: recompute tile row `r`'s jll
    /// nearly exactly, vectorised ([`accurate_quadratic`]: error-free transformations per term,
    /// TwoSum accumulation), form `D_c` in double-double and round it once, and keep the result
    /// if a rigorous error bound meets the tolerance; false (scores of row `r` untouched) if
    /// not. The bound, `(8d + 32)·u²·S + 8u²·|k_c|`, holds for any data, correlated features
    /// included (an earlier version estimated `12u·‖terms‖₂`, which a reviewer showed to be
    /// exceeded 13× when 16384 features repeat the same value); so in practice every row with
    /// finite intermediate results passes, and only overflowing ones reach the scalar
    /// double-double path.
    #[inline(always)]
    fn accurate_row<L: Lanes, const R: usize>(
        &mut self,
        packed: &[f64],
        r: usize,
        scores: &mut [f64],
        proba: bool,
    ) -> bool {
        let sc = self.scorer;
        let (n_classes, d) = (self.n_classes, sc.n_features);
        self.row.clear();
        self.row.extend((0..d).map(|j| packed[j * R + r]));
        self.scratch.clear();
        self.row_err.clear();
        let mut best: Option<(usize, Dd)> = None;
        for c in 0..n_classes {
            let mut jll = Dd::from(f64::NEG_INFINITY);
            let mut err = 0.0;
            if sc.log_norm[c] > f64::NEG_INFINITY {
                let span = c * d..(c + 1) * d;
                // SAFETY: the four slices hold d values; the CPU supports `L` (the sink runs
                // inside the level's dispatch).
                let (sum, sum_rounded) = unsafe {
                    accurate_quadratic::<L>(
                        &self.row,
                        &sc.mean_rows[span.clone()],
                        &sc.half_inv_var_rows[span.clone()],
                        &sc.half_inv_var_lo[span],
                    )
                };
                if !(sum.hi.is_finite() && sum.lo.is_finite()) {
                    return false;
                }
                let k = Dd {
                    hi: sc.log_norm[c],
                    lo: sc.log_norm_lo[c],
                };
                jll = k.sub(sum);
                // Rigorous: the quadratic's bound (doubled), the double-double k_c and the
                // subtraction (a few u² of |k_c| + S).
                let bound = (8.0 * d as f64 + 32.0) * sum_rounded + 8.0 * sc.log_norm[c].abs();
                err = bound * UNIT_ROUNDOFF * UNIT_ROUNDOFF;
            }
            if jll.hi > f64::NEG_INFINITY && best.is_none_or(|(_, b)| jll.gt(b)) {
                best = Some((c, jll));
            }
            self.scratch.push(jll);
            self.row_err.push(err);
        }
        let Some((m, top)) = best else { return false };
        let rtol = self.rtol;
        let err_m = self.row_err[m];
        // D_c (rounded once), and Σ_{c≠m} exp(D_c) and Σ_{c≠m} exp(D_c)·err(D_c).
        let (mut rest, mut weighted_err) = (0.0, 0.0);
        for (c, jll) in self.scratch.iter_mut().enumerate() {
            let shifted = shifted_by_winner(*jll, c, m, top);
            *jll = Dd::from(shifted);
            if c != m && shifted > f64::NEG_INFINITY {
                // The error of D_c: both jll errors, and D_c's own rounding.
                let err = self.row_err[c] + err_m + UNIT_ROUNDOFF * shifted.abs();
                self.row_err[c] = err;
                let e = shifted.exp();
                rest += e;
                weighted_err += e * err;
            }
        }
        let log1p_rest = rest.ln_1p();
        let inv = 1.0 / (1.0 + rest);
        // The error that log1p(rest) (or the division by 1 + rest) passes on to every class.
        let ew = weighted_err * inv;
        for (c, shifted) in self.scratch.iter().enumerate() {
            let d_c = shifted.hi;
            let ok = if c == m {
                // p_m = 1/(1 + rest): relative error ew; log p_m = −log1p(rest).
                ew <= rtol * if proba { 1.0 } else { log1p_rest }
            } else if d_c == f64::NEG_INFINITY {
                true
            } else if proba {
                // Relative error of p_c, for every p_c that is not surely subnormal (the exact
                // D_c may be as large as d_c + err).
                (d_c + self.row_err[c]).exp() < f64::MIN_POSITIVE || self.row_err[c] + ew <= rtol
            } else {
                self.row_err[c] + ew <= rtol * (log1p_rest - d_c)
            };
            if !ok {
                return false;
            }
        }
        for (c, shifted) in self.scratch.iter().enumerate() {
            scores[c * R + r] = if proba {
                shifted.hi.exp() * inv
            } else {
                shifted.hi - log1p_rest
            };
        }
        true
    }

    /// Recompute tile row `r`'s posteriors from a double-double jll (see [`MatrixSink`]).
    /// Leaves the fast values if the double-double jll overflows for every class.
    #[cold]
    #[inline(never)]
    fn exact_row<const R: usize>(
        &mut self,
        packed: &[f64],
        r: usize,
        scores: &mut [f64],
        proba: bool,
    ) {
        let sc = self.scorer;
        let (n_classes, d) = (self.n_classes, sc.n_features);
        // The double-double quadratic sum of each class (+inf for a class with zero
        // likelihood or an overflowing sum).
        self.scratch.clear();
        for c in 0..n_classes {
            let mut acc = Dd::from(f64::INFINITY);
            if sc.log_norm[c] > f64::NEG_INFINITY {
                let (block, lane) = (c / CLASS_BLOCK, c % CLASS_BLOCK);
                let mut sum = Dd::ZERO;
                for j in 0..d {
                    let at = (block * d + j) * CLASS_BLOCK + lane;
                    let t = two_sum(packed[j * R + r], -sc.mean_blocked[at]);
                    let h = Dd {
                        hi: sc.half_inv_var_blocked[at],
                        lo: sc.half_inv_var_lo[c * d + j],
                    };
                    sum = sum.add(t.mul(h).mul(t));
                }
                if sum.hi.is_finite() && sum.lo.is_finite() {
                    acc = sum;
                }
            }
            self.scratch.push(acc);
        }
        let acc = &self.scratch;
        let k = |c: usize| Dd {
            hi: sc.log_norm[c],
            lo: sc.log_norm_lo[c],
        };
        // jll_c − jll_b as (k_c − k_b) − (acc_c − acc_b): the quadratics are subtracted first,
        // so when every class is far away (sums ~1e32 times the gaps) their difference is
        // kept, where k_c − acc_c would round k_c away.
        let gap = |c: usize, b: usize| k(c).sub(k(b)).sub(acc[c].sub(acc[b]));
        let mut best: Option<usize> = None;
        for c in (0..n_classes).filter(|&c| acc[c].hi.is_finite()) {
            if best.is_none_or(|b| gap(c, b).gt(Dd::ZERO)) {
                best = Some(c);
            }
        }
        let Some(m) = best else { return };
        // The double-double gaps are within (8d + 32)·u²·(S_c + S_m) (the middle tier's
        // bound); where that may reach the tolerance (rows ~1e12 from their classes with O(1)
        // gaps between them, say), the gaps are formed exactly instead.
        let u2 = UNIT_ROUNDOFF * UNIT_ROUNDOFF;
        let largest = acc
            .iter()
            .filter(|a| a.hi.is_finite())
            .fold(0.0f64, |b, a| b.max(a.hi));
        let (m, shifted): (usize, Vec<f64>) =
            if (8.0 * d as f64 + 32.0) * 2.0 * largest * u2 > 1e-3 * self.rtol {
                let finite: Vec<bool> = acc.iter().map(|a| a.hi.is_finite()).collect();
                self.exact_gaps::<R>(packed, r, &finite)
            } else {
                let gaps = (0..n_classes)
                    .map(|c| {
                        if c == m {
                            0.0
                        } else if acc[c].hi.is_finite() {
                            gap(c, m).to_f64()
                        } else {
                            f64::NEG_INFINITY
                        }
                    })
                    .collect();
                (m, gaps)
            };
        let rest: f64 = (0..n_classes)
            .filter(|&c| c != m)
            .map(|c| shifted[c].exp())
            .sum();
        let log1p_rest = rest.ln_1p();
        let inv = 1.0 / (1.0 + rest);
        for (c, &shifted) in shifted.iter().enumerate() {
            scores[c * R + r] = if proba {
                shifted.exp() * inv
            } else {
                shifted - log1p_rest
            };
        }
    }
}

impl<T: Element> MatrixSink<'_, '_, T> {
    /// `D_c = jll_c − jll_w` for every class against the winner `w`, from exact arithmetic
    /// ([`exact_jlls`]): the winner the first maximum, each difference rounded once. Classes
    /// not `finite` (zero likelihood, or a quadratic sum beyond float64) get −inf.
    #[cold]
    #[inline(never)]
    fn exact_gaps<const R: usize>(
        &self,
        packed: &[f64],
        r: usize,
        finite: &[bool],
    ) -> (usize, Vec<f64>) {
        let (scale, jll) = exact_jlls(self.scorer, |j| packed[j * R + r], finite);
        let Some(winner) = first_max(&jll) else {
            return (0, vec![f64::NEG_INFINITY; self.n_classes]);
        };
        let top = jll[winner].as_ref().unwrap_or_else(|| unreachable!());
        let gaps = jll
            .iter()
            .map(|units| match units {
                Some(units) => exact::units_to_f64(&(units - top), scale),
                None => f64::NEG_INFINITY,
            })
            .collect();
        (winner, gaps)
    }
}

/// The jll of each `finite` class of the row `x(0..d)`, exactly, in units of `2^-scale`
/// ([`crate::exact`]: exact to `d + 2` units; the double-double `k_c` to its `u²`); `None`
/// for the other classes. Returns `scale` too.
fn exact_jlls(
    sc: &Scorer,
    x: impl Fn(usize) -> f64,
    finite: &[bool],
) -> (i64, Vec<Option<BigInt>>) {
    let d = sc.n_features;
    let scale = exact::units_for(d);
    let jll = (0..sc.n_classes)
        .map(|c| {
            if !finite[c] {
                return None;
            }
            let mut units =
                exact::to_units(sc.log_norm[c], scale) + exact::to_units(sc.log_norm_lo[c], scale);
            for j in 0..d {
                let at = c * d + j;
                units -= BigInt::from(exact::quadratic_units(
                    x(j),
                    sc.mean_rows[at],
                    sc.var_rows[at],
                    scale,
                ));
            }
            Some(units)
        })
        .collect();
    (scale, jll)
}

/// The first class with the largest exact jll (`None` if none is finite).
fn first_max(jll: &[Option<BigInt>]) -> Option<usize> {
    let mut winner: Option<usize> = None;
    for (c, units) in jll.iter().enumerate() {
        if let Some(units) = units
            && winner.is_none_or(|w| jll[w].as_ref().is_some_and(|best| units > best))
        {
            winner = Some(c);
        }
    }
    winner
}

/// `D_c = jll_c − jll_m` of class `c` against the winner `m` (jll `top`), from double-double
/// jll, rounded once: 0 for the winner, −inf for a class with zero likelihood.
#[inline(always)]
fn shifted_by_winner(jll: Dd, c: usize, m: usize, top: Dd) -> f64 {
    if c == m {
        0.0
    } else if jll.hi > f64::NEG_INFINITY {
        jll.sub(top).to_f64()
    } else {
        f64::NEG_INFINITY
    }
}

/// Transpose the tile (`[c][r]`) into rows `row0..row0 + valid` of `out` (`[r][c]`): in
/// `LANES × LANES` register blocks into `staged` (`[r][c]`, f64), then one contiguous copy (a
/// scalar strided transpose costs more than the rest of the tile's overhead together).
#[inline(always)]
fn write_rows<L: Lanes, T: Element, const R: usize>(
    out: &mut ArrayViewMut2<'_, T>,
    row0: usize,
    valid: usize,
    n_classes: usize,
    scores: &[f64],
    staged: &mut Vec<f64>,
) {
    let c = n_classes;
    staged.resize(R * c, 0.0);
    if L::REGROUP && c <= 4 {
        // SAFETY: `scores` holds c ≤ padded rows of R and `staged` R·c values; REGROUP.
        unsafe {
            match c {
                1 => rows_from_columns::<L, R, 1>(scores.as_ptr(), staged.as_mut_ptr()),
                2 => rows_from_columns::<L, R, 2>(scores.as_ptr(), staged.as_mut_ptr()),
                3 => rows_from_columns::<L, R, 3>(scores.as_ptr(), staged.as_mut_ptr()),
                _ => rows_from_columns::<L, R, 4>(scores.as_ptr(), staged.as_mut_ptr()),
            }
        }
        copy_rows(out, row0, valid, c, staged);
        return;
    }
    let full_c = c - c % L::LANES;
    debug_assert!(scores.len() >= full_c.div_ceil(CLASS_BLOCK) * CLASS_BLOCK * R);
    // SAFETY: every block lies inside `scores` (classes < full_c ≤ padded, rows < R) and
    // `staged` (rows < R, classes < c); R is a multiple of LANES; the CPU supports `L`.
    unsafe {
        let (sp, dp) = (scores.as_ptr(), staged.as_mut_ptr());
        for rb in (0..R).step_by(L::LANES) {
            for cb in (0..full_c).step_by(L::LANES) {
                transpose_block::<L, f64>(sp.add(cb * R + rb), R, dp.add(rb * c + cb), c);
            }
        }
    }
    for k in full_c..c {
        for (r, &v) in lane_row::<R>(scores, k).iter().enumerate() {
            staged[r * c + k] = v;
        }
    }
    copy_rows(out, row0, valid, c, staged);
}

/// The tile's `[r][c]` rows from `staged` into rows `row0..row0 + valid` of `out`.
#[inline(always)]
fn copy_rows<T: Element>(
    out: &mut ArrayViewMut2<'_, T>,
    row0: usize,
    valid: usize,
    c: usize,
    staged: &[f64],
) {
    let src = &staged[..valid * c];
    if let Some(dst) = out.as_slice_mut() {
        let dst = &mut dst[row0 * c..(row0 + valid) * c];
        dst.iter_mut()
            .zip(src)
            .for_each(|(o, s)| *o = T::from_f64(*s));
    } else {
        for (r, s) in src.chunks_exact(c.max(1)).enumerate() {
            let mut row = out.row_mut(row0 + r);
            row.iter_mut()
                .zip(s)
                .for_each(|(o, s)| *o = T::from_f64(*s));
        }
    }
}

/// The tile's `[N][R]` scores as `[R][N]` rows into `staged`, `LANES` rows at a time (the
/// narrow counterpart of the block transpose in [`write_rows`]).
///
/// # Safety
/// `L::REGROUP`; `scores` holds `N · R` values and `staged` `R · N`; the CPU supports `L`.
#[inline(always)]
unsafe fn rows_from_columns<L: Lanes, const R: usize, const N: usize>(
    scores: *const f64,
    staged: *mut f64,
) {
    // SAFETY: the caller's contract.
    unsafe {
        for rb in (0..R).step_by(L::LANES) {
            let columns: [L::V; N] = std::array::from_fn(|k| L::load(scores.add(k * R + rb)));
            for (m, run) in L::regroup::<N, false>(columns).into_iter().enumerate() {
                L::store(staged.add(rb * N + m * L::LANES), run);
            }
        }
    }
}

/// Writes the index of each row's most likely class (the first on ties).
struct PredictSink<'a, 'o> {
    out: &'a mut ArrayViewMut1<'o, i64>,
    chunk_offset: usize,
    n_classes: usize,
    scorer: &'a Scorer,
    /// `γ = (d + 8)·u`: a rigorous bound on the relative error of a quadratic sum `S_c` of
    /// the fast kernel (d terms, each within a few roundings).
    gamma: f64,
    /// `max_c k_c` and `u·max_c |k_c|` over the classes with a finite log prior.
    k_max: f64,
    k_err: f64,
}

impl<'a> PredictSink<'a, '_> {
    fn certainty(scorer: &'a Scorer) -> (f64, f64, f64) {
        let finite = scorer.log_norm[..scorer.n_classes]
            .iter()
            .filter(|k| k.is_finite());
        let k_max = finite.clone().fold(f64::NEG_INFINITY, |a, &k| a.max(k));
        let k_abs = finite.fold(0.0f64, |a, &k| a.max(k.abs()));
        let gamma = (scorer.n_features as f64 + 8.0) * UNIT_ROUNDOFF;
        (gamma, k_max, UNIT_ROUNDOFF * k_abs)
    }
}

impl TileSink for PredictSink<'_, '_> {
    #[inline(always)]
    fn out_span(&self, row0: usize, rows: usize) -> Option<(*const u8, usize)> {
        let p = self.out.as_slice()?.as_ptr().wrapping_add(row0);
        Some((p.cast(), rows * std::mem::size_of::<i64>()))
    }

    fn check_rows<const R: usize>(&self, row0: usize, rows: usize, scores: &[f64]) -> Result<()> {
        match zero_likelihood_row::<R>(scores, self.n_classes, rows) {
            Some(r) => Err(GaussError::NoFiniteLikelihood {
                row: self.chunk_offset + row0 + r,
            }),
            None => Ok(()),
        }
    }

    #[inline(always)]
    fn tile<L: Lanes, const R: usize>(
        &mut self,
        row0: usize,
        valid: usize,
        packed: &[f64],
        scores: &mut [f64],
    ) -> Result<()> {
        let mut best = *lane_row::<R>(scores, 0);
        let mut second = [f64::NEG_INFINITY; R];
        let mut index = [0i64; R];
        for c in 1..self.n_classes {
            let s = lane_row::<R>(scores, c);
            for r in 0..R {
                let better = s[r] > best[r];
                second[r] = if better { best[r] } else { second[r].max(s[r]) };
                best[r] = if better { s[r] } else { best[r] };
                index[r] = if better { c as i64 } else { index[r] };
            }
        }
        if let Some(r) = first_negative_infinity(&best, valid) {
            return Err(GaussError::NoFiniteLikelihood {
                row: self.chunk_offset + row0 + r,
            });
        }
        // A row whose two best jll are closer than their rounding errors can bound (each
        // within γ·S_c + u·|k_c|, with S_c ≤ k_max − second) gets its winner from the exact
        // jll, so that predict agrees with the exact posteriors (a row 1e12 from two classes
        // 1e-12 apart picked the wrong one). Branch-free over the tile; ties in ordinary data
        // are that close only by accident.
        let mut unsure = false;
        let mut close = [false; R];
        for r in 0..R {
            let bound = 2.0 * (self.gamma * (self.k_max - second[r]) + self.k_err);
            close[r] = (second[r] > f64::NEG_INFINITY) & (best[r] - second[r] <= bound);
            unsure |= close[r] & (r < valid);
        }
        if unsure {
            for r in (0..valid).filter(|&r| close[r]) {
                let finite: Vec<bool> = (0..self.n_classes)
                    .map(|c| lane_row::<R>(scores, c)[r] > f64::NEG_INFINITY)
                    .collect();
                let (_, jll) = exact_jlls(self.scorer, |j| packed[j * R + r], &finite);
                if let Some(w) = first_max(&jll) {
                    index[r] = w as i64;
                }
            }
        }
        match self.out.as_slice_mut() {
            Some(dst) => dst[row0..row0 + valid].copy_from_slice(&index[..valid]),
            None => {
                for (r, &i) in index[..valid].iter().enumerate() {
                    self.out[row0 + r] = i;
                }
            }
        }
        Ok(())
    }
}

/// Cache lines to prefetch into L2 while a tile is scored: `x_lines` lines from `x` (input
/// rows a few tiles ahead), then `out_lines` from `out` (the sink's output rows, so that the
/// stores do not wait for their lines). Never dereferenced: prefetches do not fault.
#[derive(Clone, Copy)]
struct Prefetch {
    x: *const u8,
    x_lines: usize,
    out: *const u8,
    out_lines: usize,
}

impl Prefetch {
    const NONE: Prefetch = Prefetch {
        x: std::ptr::null(),
        x_lines: 0,
        out: std::ptr::null(),
        out_lines: 0,
    };

    fn lines(&self) -> usize {
        self.x_lines + self.out_lines
    }

    /// Prefetch line `i` of the `lines()` lines (nothing beyond them).
    #[inline(always)]
    fn issue(&self, i: usize) {
        if i < self.x_lines {
            prefetch_l2(self.x.wrapping_add(i * 64));
        } else if i - self.x_lines < self.out_lines {
            prefetch_l2(self.out.wrapping_add((i - self.x_lines) * 64));
        }
    }
}

/// The bytes `[ptr, ptr + bytes)` as a start pointer and a count of 64-byte lines (the first
/// line rounded down, so every touched line is covered).
fn line_span(ptr: *const u8, bytes: usize) -> (*const u8, usize) {
    let misalign = ptr as usize % 64;
    (ptr.wrapping_sub(misalign), (bytes + misalign).div_ceil(64))
}

/// Score `x` tile by tile: pack `R = RV · L::LANES` rows, run the micro-kernel, hand the tile
/// to the sink.
#[inline(always)]
fn tiles<E: Element, S: TileSink, L: Lanes, const RV: usize, const R: usize>(
    scorer: &Scorer,
    x: ArrayView2<'_, E>,
    row_offset: usize,
    sink: &mut S,
) -> Result<()> {
    const { assert!(RV * L::LANES == R) };
    let (n, d) = x.dim();
    let padded = scorer.log_norm.len();
    let mut packed = vec![0.0f64; d.max(1) * R];
    let mut scores = vec![0.0f64; padded * R];
    let contiguous = x.as_slice();
    let tile_bytes = R * d * std::mem::size_of::<E>();
    let ahead_tiles = (PREFETCH_BYTES / tile_bytes.max(1)).clamp(1, PREFETCH_TILES);
    let mut row0 = 0;
    while row0 < n {
        let valid = R.min(n - row0);
        pack_tile::<E, L, R>(x, row0, valid, &mut packed);
        // The rows `ahead_tiles` tiles ahead stream in from memory while this one is
        // scored (the hardware prefetcher alone leaves most of that latency exposed); the
        // kernel issues one prefetch per (class block, feature) step, spread over its work.
        let mut pf = Prefetch::NONE;
        let (ahead, ahead_end) = (
            (row0 + ahead_tiles * R).min(n),
            (row0 + (ahead_tiles + 1) * R).min(n),
        );
        if let Some(src) = contiguous {
            let bytes = (ahead_end - ahead) * d * std::mem::size_of::<E>();
            (pf.x, pf.x_lines) = line_span(src.as_ptr().wrapping_add(ahead * d).cast(), bytes);
        }
        if let Some((p, bytes)) = sink.out_span(ahead, ahead_end - ahead) {
            (pf.out, pf.out_lines) = line_span(p, bytes);
        }
        // SAFETY: `packed` holds d·R values, `scores` padded·R, and the parameter blocks
        // padded·d (checked by `Scorer::new`); the CPU supports `L` (dispatch checked it).
        let (issued, sums_finite) =
            unsafe { tile_kernel::<L, RV, R>(scorer, &packed, &mut scores, pf) };
        // A NaN or infinite value in a row makes that row's quadratic sums NaN or +inf, so
        // finite sums clear the tile; otherwise the tile itself is checked (the sums may also
        // overflow for huge finite values, which then score −inf as before).
        // SAFETY: `packed` holds d·R values and the CPU supports `L`.
        if !sums_finite && !unsafe { all_finite::<L, R>(&packed[..d * R]) } {
            let (bad, error) = locate_non_finite(x, row0, valid, row_offset);
            // Rows are independent lanes: the ones before the bad row are scored, and their
            // own error comes first in row order.
            sink.check_rows::<R>(row0, bad, &scores)?;
            return Err(error);
        }
        for line in issued..pf.lines() {
            pf.issue(line);
        }
        sink.tile::<L, R>(row0, valid, &packed, &mut scores)?;
        row0 += R;
    }
    Ok(())
}

/// Copy rows `row0..row0+valid` of `x` into `packed` as `[d][R]` f64 (rows beyond `valid` are
/// zero). Finiteness is checked later, from the kernel's sums (see [`tiles`]).
#[inline(always)]
fn pack_tile<E: Element, L: Lanes, const R: usize>(
    x: ArrayView2<'_, E>,
    row0: usize,
    valid: usize,
    packed: &mut [f64],
) {
    let d = x.ncols();
    if d == 0 {
        return;
    }
    if valid < R {
        packed.fill(0.0);
    }
    if let Some(src) = x.as_slice() {
        // C order: one contiguous run of rows, transposed into the tile in LANES × LANES
        // register blocks (a scalar transpose would be vectorised into slow scatters).
        let rows = &src[row0 * d..(row0 + valid) * d];
        let full_rows = valid - valid % L::LANES;
        let narrow = L::REGROUP && d <= 4;
        // Narrow rows are regrouped whole below; wider ones in LANES × LANES blocks.
        let full_cols = if narrow { d } else { d - d % L::LANES };
        // SAFETY: every block lies inside `rows` (rows < valid, columns < d) and inside
        // `packed` (columns < d, rows < R); the CPU supports `L`.
        unsafe {
            let (sp, pp) = (rows.as_ptr(), packed.as_mut_ptr());
            match d {
                1 if narrow => pack_narrow::<E, L, R, 1>(sp, full_rows, pp),
                2 if narrow => pack_narrow::<E, L, R, 2>(sp, full_rows, pp),
                3 if narrow => pack_narrow::<E, L, R, 3>(sp, full_rows, pp),
                4 if narrow => pack_narrow::<E, L, R, 4>(sp, full_rows, pp),
                _ => {
                    for rb in (0..full_rows).step_by(L::LANES) {
                        for jb in (0..full_cols).step_by(L::LANES) {
                            let block = sp.add(rb * d + jb);
                            transpose_block::<L, E>(block, d, pp.add(jb * R + rb), R);
                        }
                    }
                }
            }
        }
        // What the blocks left: the column tail of the full rows, then the last rows whole.
        let first = if full_cols == d { full_rows } else { 0 };
        for (r, row) in rows.chunks_exact(d).enumerate().skip(first) {
            let cols = if r < full_rows { full_cols } else { 0 };
            for (p, &v) in packed[cols * R + r..]
                .iter_mut()
                .step_by(R)
                .zip(&row[cols..])
            {
                *p = v.to_f64();
            }
        }
    } else if x.strides()[0] == 1 {
        // Fortran order: each column segment is contiguous.
        let tile = x.slice(ndarray::s![row0..row0 + valid, ..]);
        for (j, col) in tile.axis_iter(Axis(1)).enumerate() {
            let dst = &mut packed[j * R..j * R + valid];
            match col.to_slice() {
                Some(src) => dst.iter_mut().zip(src).for_each(|(p, v)| *p = v.to_f64()),
                None => dst.iter_mut().zip(col).for_each(|(p, v)| *p = v.to_f64()),
            }
        }
    } else {
        let tile = x.slice(ndarray::s![row0..row0 + valid, ..]);
        for (r, row) in tile.axis_iter(Axis(0)).enumerate() {
            for (p, &v) in packed[r..].iter_mut().step_by(R).zip(row) {
                *p = v.to_f64();
            }
        }
    }
}

/// The C-order rows `0..full_rows` of `N` features each at `src` into `packed` (`[N][R]`),
/// `LANES` rows at a time: `N` contiguous vectors regrouped into one vector per feature.
///
/// # Safety
/// `L::REGROUP`; `src` holds `full_rows · N` values (`full_rows` a multiple of `LANES`, at
/// most `R`) and `packed` `N · R`; the CPU supports `L`.
#[inline(always)]
unsafe fn pack_narrow<E: Element, L: Lanes, const R: usize, const N: usize>(
    src: *const E,
    full_rows: usize,
    packed: *mut f64,
) {
    // SAFETY: the caller's contract.
    unsafe {
        for rb in (0..full_rows).step_by(L::LANES) {
            let run = src.add(rb * N);
            let rows: [L::V; N] =
                std::array::from_fn(|k| load_widened::<L, E>(run.add(k * L::LANES)));
            for (j, column) in L::regroup::<N, true>(rows).into_iter().enumerate() {
                L::store(packed.add(j * R + rb), column);
            }
        }
    }
}

/// True when every value is finite: v·0 is ±0 for finite v and NaN for NaN/±inf, so the
/// lane-wise sums stay zero exactly when all values are finite.
#[inline(always)]
unsafe fn all_finite<L: Lanes, const R: usize>(packed: &[f64]) -> bool {
    let zero = unsafe { L::splat(0.0) };
    let mut acc = [zero; 4];
    let p = packed.as_ptr();
    let mut at = 0;
    while at + L::LANES <= packed.len() {
        for a in acc.iter_mut() {
            if at + L::LANES > packed.len() {
                break;
            }
            // SAFETY: `at + LANES ≤ len`.
            *a = unsafe { L::fmadd(L::load(p.add(at)), zero, *a) };
            at += L::LANES;
        }
    }
    let mut lanes = [0.0f64; 8];
    // SAFETY: `lanes` holds 8 ≥ LANES values; register arithmetic.
    unsafe {
        let total = L::add(L::add(acc[0], acc[1]), L::add(acc[2], acc[3]));
        L::store(lanes.as_mut_ptr(), total);
    }
    // Independent compares, not a chain of horizontal adds (which cost a tenth of the tile
    // at d = 2).
    let tail_ok = packed[at..]
        .iter()
        .fold(true, |ok, v| ok & (v * 0.0 == 0.0));
    tail_ok
        & lanes[..L::LANES]
            .iter()
            .fold(true, |ok, &v| ok & (v == 0.0))
}

/// The first non-finite value among rows `row0..row0 + valid` of `x`: its row within the
/// tile, and the error naming it.
fn locate_non_finite<E: Element>(
    x: ArrayView2<'_, E>,
    row0: usize,
    valid: usize,
    row_offset: usize,
) -> (usize, GaussError) {
    for r in row0..row0 + valid {
        for (col, v) in x.row(r).iter().enumerate() {
            let value = v.to_f64();
            if !value.is_finite() {
                let error = GaussError::NonFinite {
                    what: "X",
                    row: row_offset + r,
                    col,
                    value,
                };
                return (r - row0, error);
            }
        }
    }
    let error = GaussError::NonFinite {
        what: "X",
        row: row_offset + row0,
        col: 0,
        value: f64::NAN,
    };
    (0, error)
}

/// The register-blocked micro-kernel: `scores[c][r] = k_c − Σ_j (x[j][r] − μ[c][j])² h[c][j]`
/// for every class `c` and tile row `r`, summed over `j` in order (so every level and
/// every tile position gives the same sum up to FMA rounding). `CLASS_BLOCK × RV` vector
/// accumulators stay in registers; each parameter is broadcast once per `R` rows. Returns
/// the number of prefetch slots it issued and whether every quadratic sum is finite.
///
/// # Safety
/// `packed` holds `d·R` values, `scores` `padded·R`, the CPU supports `L`.
#[inline(always)]
unsafe fn tile_kernel<L: Lanes, const RV: usize, const R: usize>(
    scorer: &Scorer,
    packed: &[f64],
    scores: &mut [f64],
    pf: Prefetch,
) -> (usize, bool) {
    const K: usize = CLASS_BLOCK;
    debug_assert!(
        packed.len() >= scorer.n_features * R && scores.len() >= scorer.log_norm.len() * R
    );
    let xp = packed.as_ptr();
    let sp = scores.as_mut_ptr();
    // SAFETY (whole body): all offsets stay inside the buffers described above.
    let full = scorer.n_classes / K;
    // SAFETY: see the function's contract.
    let finite = unsafe {
        let mut check = L::splat(0.0);
        for b in 0..full {
            check = L::add(check, class_block::<L, RV, R, K>(scorer, b, xp, sp, pf));
        }
        // The last, partial block computes only its real classes (padding would cost up to
        // 3/4 of the work for C = 1, and 1/6 for C = 10).
        let last = match scorer.n_classes % K {
            1 => class_block::<L, RV, R, 1>(scorer, full, xp, sp, pf),
            2 => class_block::<L, RV, R, 2>(scorer, full, xp, sp, pf),
            3 => class_block::<L, RV, R, 3>(scorer, full, xp, sp, pf),
            _ => L::splat(0.0),
        };
        let mut lanes = [0.0f64; 8];
        L::store(lanes.as_mut_ptr(), L::add(check, last));
        lanes[..L::LANES]
            .iter()
            .fold(true, |ok, &v| ok & (v == 0.0))
    };
    (scorer.n_classes.div_ceil(K) * scorer.n_features, finite)
}

/// The first `KB` classes of parameter block `b` for one tile (see [`tile_kernel`]). Returns
/// the lane sums of `a − a` over the quadratic sums `a`: zero exactly when all are finite.
///
/// # Safety
/// As for [`tile_kernel`]; `b` is a block of the scorer.
#[inline(always)]
unsafe fn class_block<L: Lanes, const RV: usize, const R: usize, const KB: usize>(
    scorer: &Scorer,
    b: usize,
    xp: *const f64,
    sp: *mut f64,
    pf: Prefetch,
) -> L::V {
    const K: usize = CLASS_BLOCK;
    let d = scorer.n_features;
    // SAFETY (whole body): offsets stay inside the parameter blocks, `packed` and `scores`.
    unsafe {
        let mp = scorer.mean_blocked.as_ptr().add(b * d * K);
        let hp = scorer.half_inv_var_blocked.as_ptr().add(b * d * K);
        let mut acc = [[L::splat(0.0); RV]; KB];
        for j in 0..d {
            pf.issue(b * d + j);
            let mut xv = [L::splat(0.0); RV];
            for (v, xv) in xv.iter_mut().enumerate() {
                *xv = L::load(xp.add(j * R + v * L::LANES));
            }
            for (k, acc) in acc.iter_mut().enumerate() {
                let m = L::splat(*mp.add(j * K + k));
                let h = L::splat(*hp.add(j * K + k));
                for (a, &x) in acc.iter_mut().zip(&xv) {
                    let t = L::sub(x, m);
                    *a = L::fmadd(L::mul(t, h), t, *a);
                }
            }
        }
        let mut check = L::splat(0.0);
        for (k, acc) in acc.iter().enumerate() {
            let c = b * K + k;
            let k_c = L::splat(scorer.log_norm[c]);
            for (v, &a) in acc.iter().enumerate() {
                L::store(sp.add(c * R + v * L::LANES), L::sub(k_c, a));
                // a − a: 0 for finite a, NaN for ±inf and NaN (on the adder, not the FMA unit
                // that bounds the kernel).
                check = L::add(check, L::sub(a, a));
            }
        }
        check
    }
}

/// `(p, e)` with `p = fl(a·b)` and `a·b = p + e` exactly (barring underflow): one FMA when the
/// level has it, else Dekker's splitting.
///
/// # Safety
/// The CPU supports `L`.
#[inline(always)]
unsafe fn two_prod_lanes<L: Lanes>(a: L::V, b: L::V) -> (L::V, L::V) {
    // SAFETY: register arithmetic only.
    unsafe {
        let p = L::mul(a, b);
        if L::FMA {
            // fmsub, not fmadd of 0 − p: the near-exact tier is bound by the adder.
            return (p, L::fmsub(a, b, p));
        }
        let split = |v: L::V| {
            let c = L::mul(L::splat(134_217_729.0), v); // 2^27 + 1
            let hi = L::sub(c, L::sub(c, v));
            (hi, L::sub(v, hi))
        };
        let (ah, al) = split(a);
        let (bh, bl) = split(b);
        let e = L::add(
            L::add(
                L::add(L::sub(L::mul(ah, bh), p), L::mul(ah, bl)),
                L::mul(al, bh),
            ),
            L::mul(al, bl),
        );
        (p, e)
    }
}

/// `Σ_j (x_j − μ_j)²·(h_j + hl_j)` (with `h + hl` the double-double `1/(2 var)`) as a
/// double-double, nearly exactly, and `S = Σ_j term_j` rounded (for the error bound).
///
/// Each term is formed from error-free transformations: `x − μ = t + te` (TwoSum),
/// `t·h = p + pe` and `p·t = q + qe` (TwoProduct), so `term = q + lo` with
/// `lo = qe + pe·t + t·(2·te·h + t·hl)` up to `O(u²)·term`. The `q` are added with TwoSum and
/// the low parts and TwoSum errors plainly, in two interleaved vector sets. Rigorously the
/// result is within `(4d + 16)·u²·S` of the exact sum (the plain sums of the low parts, which
/// are `O(u)·term` each, and the neglected second-order parts), whatever the data: the bound
/// holds for repeated or otherwise correlated features too. Non-finite results (overflow) are
/// returned as such for the caller to reject.
///
/// # Safety
/// The four slices have the same length; the CPU supports `L`.
#[inline(always)]
unsafe fn accurate_quadratic<L: Lanes>(
    x: &[f64],
    mean: &[f64],
    h: &[f64],
    hl: &[f64],
) -> (Dd, f64) {
    /// Sums of one lane set: `q` (TwoSum-accumulated), its TwoSum errors, and the low parts.
    type Set<V> = (V, V, V);
    #[inline(always)]
    unsafe fn step<L: Lanes>(x: L::V, m: L::V, h: L::V, hl: L::V, set: &mut Set<L::V>) {
        // SAFETY: register arithmetic only; the caller's CPU supports `L`.
        unsafe {
            let t = L::sub(x, m);
            let bb = L::sub(t, x);
            let te = L::sub(L::sub(x, L::sub(t, bb)), L::add(m, bb));
            let (p, pe) = two_prod_lanes::<L>(t, h);
            let (q, qe) = two_prod_lanes::<L>(p, t);
            let w = L::fmadd(L::add(te, te), h, L::mul(t, hl));
            let lo = L::fmadd(t, w, L::fmadd(pe, t, qe));
            let (s, e, l) = *set;
            let sum = L::add(s, q);
            let b2 = L::sub(sum, s);
            let err = L::add(L::sub(s, L::sub(sum, b2)), L::sub(q, b2));
            *set = (sum, L::add(e, err), L::add(l, lo));
        }
    }
    let n = x.len();
    let (xp, mp, hp, lp) = (x.as_ptr(), mean.as_ptr(), h.as_ptr(), hl.as_ptr());
    // SAFETY: every load is inside the four slices of length n (the caller's contract).
    unsafe {
        let zero = L::splat(0.0);
        let mut sets = [(zero, zero, zero); 2];
        let lanes = L::LANES;
        let load4 = |at: usize| {
            (
                L::load(xp.add(at)),
                L::load(mp.add(at)),
                L::load(hp.add(at)),
                L::load(lp.add(at)),
            )
        };
        let mut j = 0;
        while j + 2 * lanes <= n {
            for (k, set) in sets.iter_mut().enumerate() {
                let (xv, mv, hv, lv) = load4(j + k * lanes);
                step::<L>(xv, mv, hv, lv, set);
            }
            j += 2 * lanes;
        }
        if j + lanes <= n {
            let (xv, mv, hv, lv) = load4(j);
            step::<L>(xv, mv, hv, lv, &mut sets[0]);
            j += lanes;
        }
        // The lanes: a TwoSum chain over the sums, plain sums of the small parts.
        let [(s0, e0, l0), (s1, e1, l1)] = sets;
        let (mut sums, mut small) = ([0.0f64; 16], [0.0f64; 32]);
        L::store(sums.as_mut_ptr(), s0);
        L::store(sums.as_mut_ptr().add(8), s1);
        for (k, v) in [e0, e1, l0, l1].into_iter().enumerate() {
            L::store(small.as_mut_ptr().add(8 * k), v);
        }
        let mut hi = 0.0;
        let mut lo = 0.0;
        for k in 0..4 {
            lo += small[8 * k..8 * k + lanes].iter().sum::<f64>();
        }
        for &v in sums[..lanes].iter().chain(&sums[8..8 + lanes]) {
            let t = two_sum(hi, v);
            hi = t.hi;
            lo += t.lo;
        }
        let mut total = Dd { hi, lo: 0.0 }.add(Dd::from(lo));
        for k in j..n {
            let t = two_sum(x[k], -mean[k]);
            let hk = Dd {
                hi: h[k],
                lo: hl[k],
            };
            total = total.add(t.mul(hk).mul(t));
        }
        (total, total.hi)
    }
}

/// A double-double number `hi + lo` with `|lo| ≤ ulp(hi)/2` (Dekker 1971; Knuth's TwoSum).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dd {
    hi: f64,
    lo: f64,
}

/// `a + b` exactly as a double-double (any magnitudes).
#[inline]
fn two_sum(a: f64, b: f64) -> Dd {
    let s = a + b;
    let bb = s - a;
    Dd {
        hi: s,
        lo: (a - (s - bb)) + (b - bb),
    }
}

/// `a + b` exactly, for `|a| ≥ |b|` (or a = 0).
#[inline]
fn fast_two_sum(a: f64, b: f64) -> Dd {
    let s = a + b;
    Dd {
        hi: s,
        lo: b - (s - a),
    }
}

/// `a · b` exactly (barring underflow), with one FMA.
#[inline]
fn two_prod(a: f64, b: f64) -> Dd {
    let p = a * b;
    Dd {
        hi: p,
        lo: a.mul_add(b, -p),
    }
}

impl Dd {
    const ZERO: Dd = Dd { hi: 0.0, lo: 0.0 };

    fn from(x: f64) -> Dd {
        Dd { hi: x, lo: 0.0 }
    }

    /// Sum with relative error O(u²) of the operands' magnitudes (the accurate variant).
    fn add(self, o: Dd) -> Dd {
        let s = two_sum(self.hi, o.hi);
        let t = two_sum(self.lo, o.lo);
        let s = fast_two_sum(s.hi, s.lo + t.hi);
        fast_two_sum(s.hi, s.lo + t.lo)
    }

    fn sub(self, o: Dd) -> Dd {
        self.add(Dd {
            hi: -o.hi,
            lo: -o.lo,
        })
    }

    fn mul(self, o: Dd) -> Dd {
        let p = two_prod(self.hi, o.hi);
        fast_two_sum(p.hi, p.lo + (self.hi * o.lo + self.lo * o.hi))
    }

    fn mul_f(self, b: f64) -> Dd {
        let p = two_prod(self.hi, b);
        fast_two_sum(p.hi, p.lo + self.lo * b)
    }

    /// `self / o`, relative error O(u²).
    fn div(self, o: Dd) -> Dd {
        let q1 = self.hi / o.hi;
        let r = self.sub(o.mul_f(q1));
        let q2 = r.hi / o.hi;
        let r = r.sub(o.mul_f(q2));
        let q3 = r.hi / o.hi;
        let q = fast_two_sum(q1, q2);
        q.add(Dd::from(q3))
    }

    fn gt(self, o: Dd) -> bool {
        self.hi > o.hi || (self.hi == o.hi && self.lo > o.lo)
    }

    fn to_f64(self) -> f64 {
        self.hi + self.lo
    }
}

/// ln 2 and ln 2π as double-doubles (from 60-digit decimal values).
const LN_2: Dd = Dd {
    hi: std::f64::consts::LN_2,
    lo: 2.319_046_813_846_299_6e-17,
};
const LN_2PI: Dd = Dd {
    hi: 1.837_877_066_409_345_6,
    lo: -7.756_588_316_134_483e-17,
};

/// `1/n` as a double-double.
fn recip_dd(n: f64) -> Dd {
    let hi = 1.0 / n;
    Dd {
        hi,
        lo: (-hi).mul_add(n, 1.0) / n,
    }
}

/// `ln x` for a normal, finite `x > 0`, relative error O(u²): `x = m·2^e` with
/// `m ∈ [√½, √2)`, `ln m = 2 atanh z = 2 Σ z^(2n+1)/(2n+1)` with `z = (m − 1)/(m + 1)`,
/// `|z| ≤ 0.172`, so 23 terms reach 2⁻¹¹⁰.
fn ln_dd(x: f64) -> Dd {
    debug_assert!(x.is_finite() && x >= f64::MIN_POSITIVE);
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // m − 1 is exact (Sterbenz); m + 1 need not be.
    let z = Dd::from(m - 1.0).div(two_sum(m, 1.0));
    let z2 = z.mul(z);
    const TERMS: usize = 23;
    let mut sum = recip_dd((2 * TERMS + 1) as f64);
    for n in (0..TERMS).rev() {
        sum = sum.mul(z2).add(recip_dd((2 * n + 1) as f64));
    }
    LN_2.mul_f(e as f64).add(z.mul(sum).mul_f(2.0))
}

/// `Σ ln v` over normal, finite `v > 0`, relative error O(u²·n): the product of the
/// mantissas in double-double (exponents added separately, so it never overflows) and one
/// [`ln_dd`]. One `ln_dd` per value made `Scorer::new` cost 3.6 ms at 100 classes × 64
/// features (~0.5 µs each); this is about 10 ns per value.
fn ln_product_dd(values: impl Iterator<Item = f64>) -> Dd {
    let mut exponent = 0i64;
    let mut product = Dd::from(1.0);
    for v in values {
        debug_assert!(v.is_finite() && v >= f64::MIN_POSITIVE);
        let bits = v.to_bits();
        exponent += ((bits >> 52) & 0x7ff) as i64 - 1023;
        let mantissa = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
        // product ∈ [1, 2) and mantissa ∈ [1, 2): the new product is in [1, 4); halving it
        // (both parts, exactly) keeps it in [1, 2).
        product = product.mul_f(mantissa);
        if product.hi >= 2.0 {
            product = Dd {
                hi: product.hi * 0.5,
                lo: product.lo * 0.5,
            };
            exponent += 1;
        }
    }
    // ln(hi + lo) = ln hi + ln(1 + lo/hi), and ln(1 + ε) = ε − ε²/2 + …, with ε ≤ 2⁻⁵², so the
    // dropped ε²/2 is below 2⁻¹⁰⁵.
    let log_mantissa = ln_dd(product.hi).add(Dd::from(product.lo / product.hi));
    LN_2.mul_f(exponent as f64).add(log_mantissa)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    /// The product form of Σ ln v agrees with the sum of double-double logs to ~u² of the
    /// total, including exponents at both ends of the normal range.
    #[test]
    fn ln_product_matches_sum_of_logs() {
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for n in [1usize, 2, 7, 64, 1000] {
            let values: Vec<f64> = (0..n)
                .map(|i| match i % 5 {
                    0 => f64::MIN_POSITIVE * (1.0 + next()),
                    1 => 1e300 * (1.0 + next()),
                    _ => (next() - 0.5) * 1e3 + 600.0,
                })
                .collect();
            let by_sum = values.iter().fold(Dd::ZERO, |a, &v| a.add(ln_dd(v)));
            let by_product = ln_product_dd(values.iter().copied());
            let scale: f64 = values.iter().map(|v| v.ln().abs()).sum();
            let diff = by_product.sub(by_sum).to_f64().abs();
            assert!(
                diff <= 1e-29 * scale,
                "n {n}: {by_product:?} vs {by_sum:?} (diff {diff:e}, scale {scale})"
            );
        }
        assert_eq!(ln_product_dd([1.0, 1.0].into_iter()), Dd::ZERO);
    }

    /// Reference values of ln x as (hi, lo) from 60-digit decimal arithmetic.
    #[test]
    fn ln_dd_is_double_double_accurate() {
        let cases = [
            (2.0, LN_2.hi, LN_2.lo),
            (10.0, std::f64::consts::LN_10, -2.170_756_223_382_249_4e-16),
            (1e-300, -690.775_527_898_213_7, -2.367_009_617_670_983_2e-14),
            (0.7, -0.356_674_943_938_732_45, 4.825_563_799_376_62e-18),
            (
                std::f64::consts::SQRT_2,
                0.346_573_590_279_972_7,
                2.444_216_941_459_289_8e-17,
            ),
            (3e300, 691.874_140_186_881_8, -3.074_398_115_018_244e-14),
        ];
        for (x, hi, lo) in cases {
            let got = ln_dd(x);
            assert_eq!(got.hi, hi, "ln {x}");
            let err = ((got.lo - lo) / hi).abs();
            assert!(
                err < 1e-30,
                "ln {x}: lo {} vs {lo} (relative {err:e})",
                got.lo
            );
        }
        assert_eq!(ln_dd(1.0), Dd::ZERO);
    }

    fn log_proba(x: f64, mean: [f64; 2], level: SimdLevel) -> [f64; 2] {
        let scorer = Scorer::new(
            array![[mean[0]], [mean[1]]].view(),
            array![[1.0], [1.0]].view(),
            array![0.0, 0.0].view(),
        )
        .unwrap();
        let mut out = ndarray::Array2::<f64>::zeros((1, 2));
        scorer
            .score_into(
                array![[x]].view(),
                out.view_mut(),
                MatrixKind::LogProba,
                1,
                level,
            )
            .unwrap();
        [out[[0, 0]], out[[0, 1]]]
    }

    /// H2: log p at a far point (exact values from 50-digit decimal arithmetic).
    #[test]
    fn far_point_and_winner_log_proba_are_relatively_accurate() {
        for level in crate::simd::available_levels() {
            // x = −1e4: jll ≈ −5e7, log p_0 = −log1p(e^−20.000002) ≈ −2.0611495e-9.
            let [w, l] = log_proba(-1e4, [0.0, 2e-3], level);
            let exact = [-2.061_149_498_011_266e-9, -20.000_002_002_061_15];
            assert!(
                ((w - exact[0]) / exact[0]).abs() < 1e-12,
                "{level:?}: {w:e}"
            );
            assert!(((l - exact[1]) / exact[1]).abs() < 1e-12, "{level:?}: {l}");
            // The winner's log p = −log1p(e^−60) = −8.7565107626965e-27, not 0.
            let [w, _] = log_proba(-1.0, [0.0, 10.0], level);
            let exact = -8.756_510_762_696_52e-27;
            assert!(((w - exact) / exact).abs() < 1e-12, "{level:?}: {w:e}");
        }
    }

    #[test]
    fn subnormal_variance_is_rejected_with_the_bound() {
        let err = Scorer::new(
            array![[0.0], [1.0]].view(),
            array![[5e-324], [1.0]].view(),
            array![0.0, 0.0].view(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("2.2250738585072014e-308"), "{err}");
        assert!(
            Scorer::new(
                array![[0.0]].view(),
                array![[f64::MIN_POSITIVE]].view(),
                array![0.0].view()
            )
            .is_ok()
        );
    }
}
