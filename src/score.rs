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
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2Lanes, Avx512Lanes};
use crate::simd::{Lanes, ScalarLanes, SimdLevel, exp_nonpositive};
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
            let mut sink = MatrixSink {
                kind,
                out: &mut oc,
                chunk_offset: k * rows,
                n_classes: self.n_classes,
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
        let run = |(k, (xc, mut oc)): (usize, (ArrayView2<'_, E>, ArrayViewMut1<'_, i64>))| {
            let mut sink = PredictSink {
                out: &mut oc,
                chunk_offset: k * rows,
                n_classes: self.n_classes,
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
            tiles::<E, S, Avx2Lanes, 2, 8>(s, x, o, sink)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
        fn avx512<E: Element, S: TileSink>(
            s: &Scorer,
            x: ArrayView2<'_, E>,
            o: usize,
            sink: &mut S,
        ) -> Result<()> {
            tiles::<E, S, Avx512Lanes, 4, 32>(s, x, o, sink)
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
    /// tile row `r`; rows `valid..R` are padding. The sink may overwrite `scores`.
    fn tile<L: Lanes, const R: usize>(
        &mut self,
        row0: usize,
        valid: usize,
        scores: &mut [f64],
    ) -> Result<()>;
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

/// Row-wise maximum over the first `n_classes` classes of a tile (vectorised over rows).
#[inline(always)]
fn tile_row_max<const R: usize>(scores: &[f64], n_classes: usize) -> [f64; R] {
    let mut max = [f64::NEG_INFINITY; R];
    for c in 0..n_classes {
        let s = lane_row::<R>(scores, c);
        for r in 0..R {
            max[r] = if s[r] > max[r] { s[r] } else { max[r] };
        }
    }
    max
}

/// Writes the jll, log-probabilities or probabilities of each tile into an n × C matrix.
struct MatrixSink<'a, 'o, T: Element> {
    kind: MatrixKind,
    out: &'a mut ArrayViewMut2<'o, T>,
    chunk_offset: usize,
    n_classes: usize,
}

impl<T: Element> TileSink for MatrixSink<'_, '_, T> {
    #[inline(always)]
    fn tile<L: Lanes, const R: usize>(
        &mut self,
        row0: usize,
        valid: usize,
        scores: &mut [f64],
    ) -> Result<()> {
        let n_classes = self.n_classes;
        if self.kind != MatrixKind::JointLogLikelihood {
            let max = tile_row_max::<R>(scores, n_classes);
            if let Some(r) = (0..valid).find(|&r| max[r] == f64::NEG_INFINITY) {
                return Err(GaussError::NoFiniteLikelihood {
                    row: self.chunk_offset + row0 + r,
                });
            }
            // Max-shifted log-sum-exp: every exponent is ≤ 0, the largest is exactly 0, so the
            // sum is in [1, C] and nothing overflows even when jll ≈ −1e300.
            let mut total = [0.0f64; R];
            let proba = self.kind == MatrixKind::Proba;
            for c in 0..n_classes {
                let s = lane_row_mut::<R>(scores, c);
                for r in 0..R {
                    let shifted = s[r] - max[r];
                    let e = if L::FMA {
                        exp_nonpositive::<true>(shifted)
                    } else {
                        exp_nonpositive::<false>(shifted)
                    };
                    total[r] += e;
                    // Proba keeps exp(jll − max); log-proba keeps jll − max.
                    s[r] = if proba { e } else { shifted };
                }
            }
            let mut factor = [0.0f64; R];
            if proba {
                for r in 0..R {
                    factor[r] = 1.0 / total[r];
                }
            } else {
                // (jll − max) − log Σ, in that order: max + log Σ would round log Σ away
                // when |max| ≈ 1e300.
                for r in 0..valid {
                    factor[r] = total[r].ln();
                }
            }
            for c in 0..n_classes {
                let s = lane_row_mut::<R>(scores, c);
                for r in 0..R {
                    s[r] = if proba {
                        s[r] * factor[r]
                    } else {
                        s[r] - factor[r]
                    };
                }
            }
        }
        write_rows::<T, R>(self.out, row0, valid, n_classes, scores);
        Ok(())
    }
}

/// Transpose the tile (`[c][r]`) into rows `row0..row0 + valid` of `out` (`[r][c]`).
#[inline(always)]
fn write_rows<T: Element, const R: usize>(
    out: &mut ArrayViewMut2<'_, T>,
    row0: usize,
    valid: usize,
    n_classes: usize,
    scores: &[f64],
) {
    if let Some(dst) = out.as_slice_mut() {
        let rows = &mut dst[row0 * n_classes..(row0 + valid) * n_classes];
        for (r, row) in rows.chunks_exact_mut(n_classes.max(1)).enumerate() {
            for (o, s) in row.iter_mut().zip(scores[r..].iter().step_by(R)) {
                *o = T::from_f64(*s);
            }
        }
    } else {
        for r in 0..valid {
            let mut row = out.row_mut(row0 + r);
            for (o, s) in row.iter_mut().zip(scores[r..].iter().step_by(R)) {
                *o = T::from_f64(*s);
            }
        }
    }
}

/// Writes the index of each row's most likely class (the first on ties).
struct PredictSink<'a, 'o> {
    out: &'a mut ArrayViewMut1<'o, i64>,
    chunk_offset: usize,
    n_classes: usize,
}

impl TileSink for PredictSink<'_, '_> {
    #[inline(always)]
    fn tile<L: Lanes, const R: usize>(
        &mut self,
        row0: usize,
        valid: usize,
        scores: &mut [f64],
    ) -> Result<()> {
        let mut best = *lane_row::<R>(scores, 0);
        let mut index = [0i64; R];
        for c in 1..self.n_classes {
            let s = lane_row::<R>(scores, c);
            for r in 0..R {
                let better = s[r] > best[r];
                best[r] = if better { s[r] } else { best[r] };
                index[r] = if better { c as i64 } else { index[r] };
            }
        }
        if let Some(r) = (0..valid).find(|&r| best[r] == f64::NEG_INFINITY) {
            return Err(GaussError::NoFiniteLikelihood {
                row: self.chunk_offset + row0 + r,
            });
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
    let mut row0 = 0;
    while row0 < n {
        let valid = R.min(n - row0);
        if !pack_tile::<E, L, R>(x, row0, valid, &mut packed) {
            return Err(locate_non_finite(x, row0, valid, row_offset));
        }
        // SAFETY: `packed` holds d·R values, `scores` padded·R, and the parameter blocks
        // padded·d (checked by `Scorer::new`); the CPU supports `L` (dispatch checked it).
        unsafe { tile_kernel::<L, RV, R>(scorer, &packed, &mut scores) };
        sink.tile::<L, R>(row0, valid, &mut scores)?;
        row0 += R;
    }
    Ok(())
}

/// Copy rows `row0..row0+valid` of `x` into `packed` as `[d][R]` f64 (rows beyond `valid` are
/// zero). Returns false if any value is NaN or infinite.
#[inline(always)]
fn pack_tile<E: Element, L: Lanes, const R: usize>(
    x: ArrayView2<'_, E>,
    row0: usize,
    valid: usize,
    packed: &mut [f64],
) -> bool {
    let d = x.ncols();
    if d == 0 {
        return true;
    }
    if valid < R {
        packed.fill(0.0);
    }
    if let Some(src) = x.as_slice() {
        // C order: one contiguous run of rows, transposed into the tile in LANES × LANES
        // register blocks (a scalar transpose would be vectorised into slow scatters).
        let rows = &src[row0 * d..(row0 + valid) * d];
        let (full_rows, full_cols) = (valid - valid % L::LANES, d - d % L::LANES);
        // SAFETY: every block lies inside `rows` (rows < valid, columns < d) and inside
        // `packed` (columns < d, rows < R); the CPU supports `L`.
        unsafe {
            let (sp, pp) = (rows.as_ptr(), packed.as_mut_ptr());
            for rb in (0..full_rows).step_by(L::LANES) {
                for jb in (0..full_cols).step_by(L::LANES) {
                    let mut v = [L::splat(0.0); 8];
                    for (i, v) in v[..L::LANES].iter_mut().enumerate() {
                        *v = load_lanes::<E, L>(sp.add((rb + i) * d + jb));
                    }
                    L::transpose(&mut v[..L::LANES]);
                    for (i, v) in v[..L::LANES].iter().enumerate() {
                        L::store(pp.add((jb + i) * R + rb), *v);
                    }
                }
            }
        }
        for (r, row) in rows.chunks_exact(d).enumerate() {
            let cols = if r < full_rows { full_cols } else { 0 };
            if cols == d {
                continue;
            }
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
    // SAFETY: `packed` holds d·R values and the CPU supports `L`.
    unsafe { all_finite::<L, R>(&packed[..d * R]) }
}

/// Load `LANES` values of `E` at `p` as f64 (exact widening for f32).
///
/// # Safety
/// `p` points to `LANES` readable values; the CPU supports `L`.
#[inline(always)]
unsafe fn load_lanes<E: Element, L: Lanes>(p: *const E) -> L::V {
    // Resolved at compile time: E is f32 or f64.
    unsafe {
        if std::any::TypeId::of::<E>() == std::any::TypeId::of::<f32>() {
            L::load_f32(p.cast::<f32>())
        } else {
            debug_assert!(std::any::TypeId::of::<E>() == std::any::TypeId::of::<f64>());
            L::load(p.cast::<f64>())
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
    let mut lanes = vec![0.0f64; 4 * L::LANES];
    for (k, a) in acc.iter().enumerate() {
        // SAFETY: `lanes` holds 4·LANES values.
        unsafe { L::store(lanes.as_mut_ptr().add(k * L::LANES), *a) };
    }
    let tail: f64 = packed[at..].iter().map(|v| v * 0.0).sum();
    lanes.iter().sum::<f64>() + tail == 0.0
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
/// for every class `c` and tile row `r`, summed over `j` in order (so every level and
/// every tile position gives the same sum up to FMA rounding). `CLASS_BLOCK × RV` vector
/// accumulators stay in registers; each parameter is broadcast once per `R` rows.
///
/// # Safety
/// `packed` holds `d·R` values, `scores` `padded·R`, the CPU supports `L`.
#[inline(always)]
unsafe fn tile_kernel<L: Lanes, const RV: usize, const R: usize>(
    scorer: &Scorer,
    packed: &[f64],
    scores: &mut [f64],
) {
    const K: usize = CLASS_BLOCK;
    debug_assert!(
        packed.len() >= scorer.n_features * R && scores.len() >= scorer.log_norm.len() * R
    );
    let xp = packed.as_ptr();
    let sp = scores.as_mut_ptr();
    // SAFETY (whole body): all offsets stay inside the buffers described above.
    let full = scorer.n_classes / K;
    // SAFETY: see the function's contract.
    unsafe {
        for b in 0..full {
            class_block::<L, RV, R, K>(scorer, b, xp, sp);
        }
        // The last, partial block computes only its real classes (padding would cost up to
        // 3/4 of the work for C = 1, and 1/6 for C = 10).
        match scorer.n_classes % K {
            1 => class_block::<L, RV, R, 1>(scorer, full, xp, sp),
            2 => class_block::<L, RV, R, 2>(scorer, full, xp, sp),
            3 => class_block::<L, RV, R, 3>(scorer, full, xp, sp),
            _ => {}
        }
    }
}

/// The first `KB` classes of parameter block `b` for one tile (see [`tile_kernel`]).
///
/// # Safety
/// As for [`tile_kernel`]; `b` is a block of the scorer.
#[inline(always)]
unsafe fn class_block<L: Lanes, const RV: usize, const R: usize, const KB: usize>(
    scorer: &Scorer,
    b: usize,
    xp: *const f64,
    sp: *mut f64,
) {
    const K: usize = CLASS_BLOCK;
    let d = scorer.n_features;
    // SAFETY (whole body): offsets stay inside the parameter blocks, `packed` and `scores`.
    unsafe {
        let mp = scorer.mean_blocked.as_ptr().add(b * d * K);
        let hp = scorer.half_inv_var_blocked.as_ptr().add(b * d * K);
        let mut acc = [[L::splat(0.0); RV]; KB];
        for j in 0..d {
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
        for (k, acc) in acc.iter().enumerate() {
            let c = b * K + k;
            let k_c = L::splat(scorer.log_norm[c]);
            for (v, &a) in acc.iter().enumerate() {
                L::store(sp.add(c * R + v * L::LANES), L::sub(k_c, a));
            }
        }
    }
}
