//! Per-class sufficient statistics (weight, mean, sum of squared deviations) in one pass.
//!
//! Algorithm (ALGORITHMS.md §1): every class has a shift `K_c` and the kernels accumulate
//! `S1 = Σ w·t` and `S2 = Σ w·t²` with `t = x − K_c`. Three fast paths for float32/float64 rows
//! with contiguous features fix `K_c` for a whole chunk (centred on the class's first rows) and
//! apply the guard below once per chunk: the register-resident path (`chunk_tiny`, AVX-512,
//! d ≤ 4), the streamed path (`chunk_streamed`, unweighted, small class tables) and the
//! bucketed path (`chunk_bucketed`). A chunk that fails is redone by the block-wise path
//! described next, where rows are taken in cache-sized blocks and `K_c` is the running mean's
//! high part (or, for a class new to the chunk, its first positive-weight row).
//!
//! * **One-pass shifted kernel** ([`block_onepass`]): one read of the block accumulates
//!   `S1 = Σ w·t` and `S2 = Σ w·t²`, `t = x − K_c` (exact by Sterbenz's lemma when `x` is near
//!   `K_c`, so a large common offset costs nothing). Then `D = S1/W`, `m2_b = S2 − S1·D`, and the
//!   block mean is the double-double `K_c + D` (TwoSum). The rounding error of `m2_b` is about
//!   `u·(n_b + 3)·S2` for `n_b` rows of the class in the block.
//! * **Guard**: the block is accepted only if, for every (class, feature),
//!   `S2 ≤ 16·(m2_b + D²·w_b·W/(W + w_b))` — `S2` against the block's whole contribution to the
//!   running sum of squares (its own spread plus the merge term). The error of each block is
//!   then at most 16 roundings of a non-negative part of the total, so the relative error of
//!   the final `m2` stays `O(u·n_b)`. A block that fails (a class whose first row is an outlier,
//!   a mean near 0 far from the shift, overflow of `t²`, NaN) is redone while still in cache
//!   with the exact **corrected two-pass** (Chan, Golub & LeVeque 1983): pass A sums `w·(x − K)`,
//!   pass B sums `w·t²` and `w·t` with `t = (x − K) − D`, and the correction `Σw·t/W` is added
//!   back to the mean and `(Σw·t)²/W` taken off `m2_b`.
//! * **Merge**: each block is merged into the chunk totals with the weighted
//!   Chan/Schubert–Gertz formula ([`merge_group`]) on double-double means. Relative error of
//!   the variance: about `u·(n_b + κ·log(n/B))`, `κ = |mean|/σ`, instead of the textbook
//!   `n·κ²·u`; the mean is within a few `u` (tests: 1e-15 relative at offset 1e12).
//!
//! Layouts: contiguous rows (C order, sliced or reversed rows) run an explicit-SIMD row kernel
//! (`Lanes`, with 4 accumulator copies for small `C·d` to break store-to-load chains and a
//! software prefetch); Fortran order walks each column as one contiguous stream; other strides
//! pack the block and use the two-pass.
//!
//! Rows are split into chunks whose size depends only on the shape, never on the thread count,
//! and chunk results are merged left to right, so the output is bit-identical for any number of
//! threads. Non-finite input is detected without a per-element test: NaN and ±inf propagate
//! into the totals and stay there, so one check per chunk finds them and a rescan of that
//! chunk names the first bad position.

use ndarray::{ArrayView1, ArrayView2};
use rayon::prelude::*;

use crate::element::{Element, Label};
use crate::error::{GaussError, Result};
use crate::exact::pow2;
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2Lanes, Avx512Lanes};
use crate::simd::{Lanes, ScalarLanes, SimdLevel, load_widened, madd, prefetch_l2, prefetch_read};
use crate::simd_dispatch;
use crate::threads::run_in_pool;
use std::any::TypeId;

/// Weighted moments of `n_groups` groups over `n_features` features.
///
/// `mean` and `m2` are row-major `n_groups × n_features`; `m2` is the weighted sum of squared
/// deviations from the mean, so the MLE variance is `m2 / weight`. The mean is kept as an
/// unevaluated double-double sum `mean + mean_lo` (`|mean_lo| ≤ ulp(mean)/2`): with a large
/// common offset the merge formula needs the difference of two means to full relative precision,
/// and a plain f64 mean would carry an absolute error of `u·|mean|` into every merge.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    /// Number of groups (classes, or 1 for the global statistics).
    pub n_groups: usize,
    /// Number of features.
    pub n_features: usize,
    /// Total weight per group.
    pub weight: Vec<f64>,
    /// Weighted mean per group and feature, rounded to f64.
    pub mean: Vec<f64>,
    /// Rounding residual of `mean`: the exact mean is `mean + mean_lo` to about `u²·|mean|`.
    pub mean_lo: Vec<f64>,
    /// Weighted sum of squared deviations per group and feature.
    pub m2: Vec<f64>,
}

/// Knuth's TwoSum: `(s, e)` with `s = fl(a + b)` and `a + b = s + e` exactly.
#[inline(always)]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    // Keep the pair finite when `s` overflows (the caller reports the overflow).
    if e.is_finite() { (s, e) } else { (s, 0.0) }
}

impl Moments {
    /// The statistics of zero rows (the identity of [`Moments::merge`]).
    pub fn zeros(n_groups: usize, n_features: usize) -> Self {
        Moments {
            n_groups,
            n_features,
            weight: vec![0.0; n_groups],
            mean: vec![0.0; n_groups * n_features],
            mean_lo: vec![0.0; n_groups * n_features],
            m2: vec![0.0; n_groups * n_features],
        }
    }

    /// Build from parts, checking that the shapes agree and the values are usable.
    pub fn from_parts(
        weight: Vec<f64>,
        mean: Vec<f64>,
        mean_lo: Vec<f64>,
        m2: Vec<f64>,
        n_features: usize,
    ) -> Result<Self> {
        let n_groups = weight.len();
        let cells = n_groups * n_features;
        if mean.len() != cells || mean_lo.len() != cells || m2.len() != cells {
            return Err(GaussError::ShapeMismatch {
                what: format!(
                    "weight has {n_groups} groups but mean/mean_lo/m2 have {}/{}/{} entries \
                     for {n_features} features",
                    mean.len(),
                    mean_lo.len(),
                    m2.len()
                ),
            });
        }
        if let Some(group) = weight.iter().position(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(GaussError::BadParameter {
                what: format!(
                    "statistics weight must be finite and >= 0; got {} for group {group}",
                    weight[group]
                ),
            });
        }
        // The message names the field and the cell, so a table built elsewhere can be fixed.
        for (name, values, rule) in [
            ("mean", &mean, "finite"),
            ("mean_lo", &mean_lo, "finite"),
            ("m2", &m2, "finite and >= 0"),
        ] {
            let non_negative = name == "m2";
            if let Some(cell) = values
                .iter()
                .position(|v| !v.is_finite() || (non_negative && *v < 0.0))
            {
                return Err(GaussError::BadParameter {
                    what: format!(
                        "statistics {name} must be {rule}; got {} for group {}, feature {}",
                        values[cell],
                        cell / n_features,
                        cell % n_features
                    ),
                });
            }
        }
        // A group without weight has no rows: a positive m2 there would be dropped by the next
        // merge without a word.
        if let Some(cell) =
            (0..cells).find(|&i| weight[i / n_features.max(1)] == 0.0 && m2[i] != 0.0)
        {
            return Err(GaussError::BadParameter {
                what: format!(
                    "statistics m2 must be 0 where weight is 0; got {} for group {}, feature {}",
                    m2[cell],
                    cell / n_features,
                    cell % n_features
                ),
            });
        }
        Ok(Moments {
            n_groups,
            n_features,
            weight,
            mean,
            mean_lo,
            m2,
        })
    }

    /// Exact merge of the statistics of other rows into `self`.
    pub fn merge(&mut self, other: &Moments) -> Result<()> {
        if self.n_groups != other.n_groups || self.n_features != other.n_features {
            return Err(GaussError::ShapeMismatch {
                what: format!(
                    "cannot merge statistics of {}×{} into {}×{}",
                    other.n_groups, other.n_features, self.n_groups, self.n_features
                ),
            });
        }
        // Merge into a copy: a merge whose result overflows is an error and leaves `self` as
        // it was (the tables are small next to the data, so the copy is cheap).
        let mut merged = self.clone();
        let d = self.n_features;
        for g in 0..self.n_groups {
            let span = g * d..(g + 1) * d;
            merge_group(
                GroupMut {
                    weight: &mut merged.weight[g],
                    mean: &mut merged.mean[span.clone()],
                    mean_lo: &mut merged.mean_lo[span.clone()],
                    m2: &mut merged.m2[span.clone()],
                },
                other.weight[g],
                &other.mean[span.clone()],
                &other.mean_lo[span.clone()],
                &other.m2[span],
            );
        }
        if !merged.all_finite() && self.all_finite() && other.all_finite() {
            return Err(GaussError::Overflow {
                what: "merging these statistics".to_string(),
            });
        }
        *self = merged;
        Ok(())
    }

    /// Merge all groups into one (the statistics of every row together), in group order.
    pub fn pooled(&self) -> Moments {
        let d = self.n_features;
        let mut total = Moments::zeros(1, d);
        for g in 0..self.n_groups {
            let span = g * d..(g + 1) * d;
            merge_group(
                GroupMut {
                    weight: &mut total.weight[0],
                    mean: &mut total.mean,
                    mean_lo: &mut total.mean_lo,
                    m2: &mut total.m2,
                },
                self.weight[g],
                &self.mean[span.clone()],
                &self.mean_lo[span.clone()],
                &self.m2[span],
            );
        }
        total
    }

    fn all_finite(&self) -> bool {
        self.mean
            .iter()
            .chain(&self.m2)
            .chain(&self.weight)
            .all(|v| v.is_finite())
    }
}

/// One group's running statistics, borrowed for an update.
pub struct GroupMut<'a> {
    /// Total weight.
    pub weight: &'a mut f64,
    /// Mean (high part).
    pub mean: &'a mut [f64],
    /// Mean (low part).
    pub mean_lo: &'a mut [f64],
    /// Sum of squared deviations.
    pub m2: &'a mut [f64],
}

/// Merge one group's statistics `(w_b, mean_b + lo_b, m2_b)` into the running group `a`.
///
/// Weighted Chan et al. (1983) update in the form of Schubert & Gertz (SSDBM 2018):
/// `δ = m_b − M`, `M += δ·w_b/W'` (or `M = m_b − δ·W/W'` when `b` is heavier),
/// `S += S_b + δ²·W·w_b/W'`, with `δ` taken from the
/// double-double means (so it keeps full relative precision even when both means are ~1e9σ)
/// and `M` renormalised by TwoSum. One division per group, none per feature.
#[inline]
pub fn merge_group(a: GroupMut<'_>, w_b: f64, mean_b: &[f64], lo_b: &[f64], m2_b: &[f64]) {
    if w_b <= 0.0 {
        return;
    }
    if *a.weight <= 0.0 {
        *a.weight = w_b;
        for j in 0..a.mean.len() {
            (a.mean[j], a.mean_lo[j]) = two_sum(mean_b[j], lo_b[j]);
        }
        a.m2.copy_from_slice(m2_b);
        return;
    }
    let total = *a.weight + w_b;
    let frac_b = w_b / total;
    let w_a = *a.weight;
    // The new mean is the heavier side's mean plus the (smaller) correction towards the
    // lighter one: from the lighter side, `M + δ·w_b/W'` cancels (a part of weight 1e-4 and
    // mean 1e-3 merged with weight 2 and mean 0 lost 1e-12 relative; now about u).
    let from_b = w_b > w_a;
    let frac_a = w_a / total;
    // cross = W·w_b/W', formed as the lighter weight times the heavier side's fraction (at
    // least 1/2, so never subnormal): at most the smaller weight, so it never overflows, and
    // accurate when the weights are 2^1022 apart (W·(w_b/W') then multiplied a subnormal
    // fraction: var 1e-5 off). The term is (δ·cross)·δ, which overflows only if the term
    // itself does (δ·W first overflowed for W = 1e300 and δ = 3e100, term 5e181). δ² is
    // never formed.
    let (lighter, heavier_frac) = if from_b { (w_a, frac_b) } else { (w_b, frac_a) };
    let cross = lighter * heavier_frac;
    // A cross weight below the normal range (a subnormal weight) is kept scaled by 2^600
    // (exact) and the term scaled back after the product that keeps it in range. The former
    // ((δ·W)·(w_b/W'))·δ made inf·0 = NaN when δ·W overflowed and w_b/W' underflowed (a class
    // with weights 1e300 and 5e-324 on data ~1e10: a spurious overflow error, KB4's tag).
    let scaled_cross = (cross < f64::MIN_POSITIVE).then_some((lighter * TWO_600) * heavier_frac);
    for j in 0..a.mean.len() {
        let delta = (mean_b[j] - a.mean[j]) + (lo_b[j] - a.mean_lo[j]);
        let term = match scaled_cross {
            None => (delta * cross) * delta,
            // |δ| ≤ 2^300: the scaled product stays below 2^178; beyond, δ·cross is normal.
            Some(c) if delta.abs() <= TWO_300 => ((delta * c) * delta) * TWO_M600,
            Some(c) => ((delta * c) * TWO_M600) * delta,
        };
        a.m2[j] += m2_b[j] + term;
        let (hi, lo) = if from_b {
            two_sum(mean_b[j], lo_b[j] - share(delta, w_a, frac_a, total))
        } else {
            two_sum(a.mean[j], a.mean_lo[j] + share(delta, w_b, frac_b, total))
        };
        a.mean[j] = hi;
        a.mean_lo[j] = lo;
    }
    *a.weight = total;
}

/// `2^600`, `2^-600` and `2^300`, exactly.
const TWO_600: f64 = pow2(600);
const TWO_M600: f64 = pow2(-600);
const TWO_300: f64 = pow2(300);

/// `δ·w/W'` (the lighter side's pull on the merged mean) from `frac = w/W'`, or as `(δ·w)/W'`
/// when `frac` is below float64's normal range and would lose digits (parts whose weights are
/// more than 2^1022 apart: the merged mean was 1e-5 off).
#[inline(always)]
fn share(delta: f64, w: f64, frac: f64, total: f64) -> f64 {
    if frac >= f64::MIN_POSITIVE || frac == 0.0 {
        delta * frac
    } else {
        (delta * w) / total
    }
}

/// Per-class statistics plus the unweighted statistics of all rows (which `var_smoothing`
/// scales, as in scikit-learn, even when the fit is weighted).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassStats {
    /// One group per class, weighted.
    pub classes: Moments,
    /// One group, every row with weight 1.
    pub global: Moments,
}

/// Inputs of [`class_stats`].
#[derive(Clone, Copy)]
pub struct FitInput<'a, E: Element, L: Label> {
    /// Data, `n × d`, any strides.
    pub x: ArrayView2<'a, E>,
    /// Class code of each row, in `0..n_classes`.
    pub labels: ArrayView1<'a, L>,
    /// Optional non-negative finite weight of each row.
    pub weights: Option<ArrayView1<'a, f64>>,
    /// Number of classes.
    pub n_classes: usize,
}

/// Rows per in-cache block: about 128 KiB of f64 per block, and at least a few rows per class
/// so the per-block merge (O(C·d)) stays small next to the block's O(B·d) work.
fn block_rows(n_features: usize, n_classes: usize) -> usize {
    let d = n_features.max(1);
    let base = (16_384 / d).clamp(32, 4096);
    let per_class = (8 * n_classes).min(131_072 / d);
    base.max(per_class).max(1)
}

/// Rows per parallel chunk: a multiple of the block, about 2^21 elements, fixed by the shape
/// alone so results do not depend on the thread count.
fn chunk_rows(n_features: usize, block: usize) -> usize {
    let target = (1usize << 21) / n_features.max(1);
    target.div_ceil(block).max(1) * block
}

/// Largest `n_classes × n_features` table (2^28 cells: 2 GiB of f64 per table).
pub const MAX_TABLE_CELLS: usize = 1 << 28;

/// Serial below this many elements: the pool hand-off costs more than it saves.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 17;

/// The smallest weight that is used as given (2^-64). Scaled up to this, a class's heaviest
/// rows keep `w·t` normal for any `|t| ≥ 2^-958`, and `w·t² ≤ m2 = W·var` cannot overflow
/// while `m2` itself is finite (the scaled `W` stays below 1 for fewer than 2^63 rows).
const SMALLEST_UNSCALED_WEIGHT: f64 = pow2(-64);

/// Per-class powers of two for the weights, and their inverses, or `None` when no class needs
/// one. The statistics do not depend on the weights' scale, but the kernels form `w·(x − K)`
/// and `w·(x − K)²`, which lose digits when they fall below float64's normal range: three
/// weights of 5e-324 made a mean 14% wrong, and weights of 1e-200 on data ~1e-150 made one 50%
/// wrong (`w·t` ~ 1e-350; an earlier threshold of 2^-960 left that class as given). A class
/// whose largest weight is below [`SMALLEST_UNSCALED_WEIGHT`] is scaled by the power of two that
/// brings that weight into `[2^-64, 2^-63)`, exactly, and its weight and `m2` are scaled back
/// at the end. Scaling by a power of two commutes with rounding, so the results equal those of
/// the unscaled arithmetic wherever that keeps its digits. Only upwards: scaling huge weights
/// down underflowed `w·t²` for data ~1e-300 (weights 1e300 keep such products normal; huge
/// weights with huge data go to the row-by-row fallback instead). The decision depends only
/// on the class's own weights. Left as a documented limit: `m2 = W·var` itself below ~2.2e-308
/// has fewer digits, as any float64 that small.
fn weight_scales<E: Element, L: Label>(input: FitInput<'_, E, L>) -> Option<(Vec<f64>, Vec<f64>)> {
    let w = input.weights?;
    // Zero, or at least the smallest unscaled weight (NaN and negative weights are reported by
    // the main pass); a fold without early exit, so that it vectorises: one read of the
    // weights (at 1e6 rows about the 0.16 ms of `w.sum()`, against 35 ms for the weighted fit
    // of 1e6×32×10).
    let in_range = |ok: bool, v: &f64| ok & (*v == 0.0 || v.abs() >= SMALLEST_UNSCALED_WEIGHT);
    let all_in_range = match w.as_slice() {
        Some(values) => values.iter().fold(true, in_range),
        None => w.iter().fold(true, in_range),
    };
    if all_in_range {
        return None;
    }
    let mut largest = vec![0.0f64; input.n_classes];
    for (&v, label) in w.iter().zip(input.labels.iter()) {
        let c = label.to_i64();
        // Bad labels and weights are reported by the main pass.
        if v.is_finite() && v > 0.0 && (0..input.n_classes as i64).contains(&c) {
            largest[c as usize] = largest[c as usize].max(v);
        }
    }
    let shifts: Vec<i32> = largest
        .iter()
        .map(|&hi| {
            if hi > 0.0 && hi < SMALLEST_UNSCALED_WEIGHT {
                // hi ≥ 2^-1074, so the shift is at most 1010 (2^±1010 are normal).
                -64 - hi.log2().floor() as i32
            } else {
                0
            }
        })
        .collect();
    Some((
        shifts.iter().map(|&k| pow2(k)).collect(),
        shifts.iter().map(|&k| pow2(-k)).collect(),
    ))
}

/// The per-class weight factors of [`weight_scales`] (none: weights as given).
#[derive(Clone, Copy)]
struct WeightScale<'a>(Option<&'a [f64]>);

impl WeightScale<'_> {
    #[inline(always)]
    fn apply(self, weight: f64, class: usize) -> f64 {
        match self.0 {
            Some(s) => weight * s[class],
            None => weight,
        }
    }
}

/// Per-class weight, mean and squared-deviation sum of `x`, in one pass, on `n_threads`
/// threads, with kernels for `level`.
///
/// Errors: a NaN/inf in `x` (first position in the first bad chunk), a label outside
/// `0..n_classes`, a negative or non-finite weight, mismatched lengths, float64 overflow.
pub fn class_stats<E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    n_threads: usize,
    level: SimdLevel,
) -> Result<ClassStats> {
    let (n, d) = input.x.dim();
    if input.labels.len() != n {
        return Err(GaussError::ShapeMismatch {
            what: format!(
                "X has {n} rows but labels have {} entries",
                input.labels.len()
            ),
        });
    }
    if let Some(w) = input.weights
        && w.len() != n
    {
        return Err(GaussError::ShapeMismatch {
            what: format!("X has {n} rows but sample_weight has {} entries", w.len()),
        });
    }
    // The statistics hold several n_classes × d tables per chunk; refuse sizes whose
    // allocation would fail (an abort, not an error) instead of trying.
    if input
        .n_classes
        .checked_mul(d.max(1))
        .is_none_or(|cells| cells > MAX_TABLE_CELLS)
    {
        return Err(GaussError::BadParameter {
            what: format!(
                "n_classes × n_features = {} × {d} is too large (at most {MAX_TABLE_CELLS} cells)",
                input.n_classes
            ),
        });
    }
    let block = block_rows(d, input.n_classes);
    let chunk = chunk_rows(d, block);
    let n_chunks = n.div_ceil(chunk);
    let scales = weight_scales(input);
    let scale = WeightScale(scales.as_ref().map(|(s, _)| s.as_slice()));
    let run_chunk = |k: usize| {
        let rows = k * chunk..((k + 1) * chunk).min(n);
        chunk_stats(input, rows, block, level, scale)
    };
    let parallel = n_threads > 1 && n_chunks > 1 && n.saturating_mul(d) >= PARALLEL_MIN_ELEMENTS;
    let partials: Vec<Result<ClassStats>> = if parallel {
        run_in_pool(n_threads, || {
            (0..n_chunks).into_par_iter().map(run_chunk).collect()
        })
    } else {
        (0..n_chunks).map(run_chunk).collect()
    };
    let mut classes = Moments::zeros(input.n_classes, d);
    let mut global = Moments::zeros(1, d);
    for part in partials {
        let part = part?;
        classes.merge(&part.classes)?;
        global.merge(&part.global)?;
    }
    if let Some((_, undo)) = &scales {
        // Back to the caller's weights: exact multiplications by powers of two (an m2 that
        // lands below float64's normal range keeps fewer digits; see `weight_scales`).
        for (c, &f) in undo.iter().enumerate() {
            classes.weight[c] *= f;
            classes.m2[c * d..(c + 1) * d]
                .iter_mut()
                .for_each(|v| *v *= f);
        }
    }
    if input.weights.is_none() {
        // Unweighted: the global statistics are the pooled class statistics, exactly.
        global = classes.pooled();
    }
    if !classes.all_finite() || !global.all_finite() {
        // A weighted mean of finite values lies between them, so it never overflows itself; a
        // non-finite mean here comes from differences of values beyond float64 in the merges,
        // and then the squared deviations overflow as well.
        let what = if classes.weight.iter().any(|w| !w.is_finite()) {
            "the total sample weight of a class"
        } else {
            "the sum of squared deviations"
        };
        return Err(GaussError::Overflow {
            what: what.to_string(),
        });
    }
    Ok(ClassStats { classes, global })
}

/// One cache line of f64, the allocation unit of [`AlignedBuf`].
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f64; 8]);

/// A zeroed f64 buffer that starts on a 64-byte boundary: the kernels' vector stores into the
/// accumulator tables then never split across cache lines (a split store costs about twice).
struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    fn zeros(len: usize) -> Self {
        AlignedBuf {
            lines: vec![Line([0.0; 8]); len.div_ceil(8)],
            len,
        }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [f64];
    fn deref(&self) -> &[f64] {
        // SAFETY: `lines` holds `8·lines.len() ≥ len` contiguous initialised f64.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f64>(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [f64] {
        // SAFETY: as for `deref`, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f64>(), self.len) }
    }
}

impl<'a> IntoIterator for &'a AlignedBuf {
    type Item = &'a f64;
    type IntoIter = std::slice::Iter<'a, f64>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut AlignedBuf {
    type Item = &'a mut f64;
    type IntoIter = std::slice::IterMut<'a, f64>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

/// Scratch space for one block, reused across the blocks of a chunk.
///
/// Every class has a shift `K_c` (its running mean's high part, or for a class new to the
/// chunk the first of its rows): the passes accumulate `x − K_c`, which is exact by Sterbenz's
/// lemma when `x` is near `K_c`, so a large common offset costs no precision.
struct BlockScratch {
    /// Per-class shift `K_c` (row-major C × d).
    shift: AlignedBuf,
    has_shift: Vec<bool>,
    /// Per-class weighted sums of `x − K`, then (after `finish_means`) their block means `D`.
    sum: AlignedBuf,
    /// Per-class weighted squared deviations from the block mean.
    sq_dev: AlignedBuf,
    /// Per-class weighted sums of deviations from the block mean (zero in exact arithmetic);
    /// the corrected two-pass algorithm (Chan, Golub & LeVeque 1983) adds them back.
    dev_sum: AlignedBuf,
    /// Per-class weight of the rows so far, with the rounding errors of its sum in
    /// `weight_lo` (TwoSum per row; renormalised before the weights are read, and the rest
    /// carried into the chunk total by the merge), so a class weight is as accurate as its
    /// sums: plain addition lost all of 1e5 unit weights next to one of 1e16 (mean and
    /// variance 1.6e-12 off).
    weight: Vec<f64>,
    weight_lo: Vec<f64>,
    /// Per-class rounding errors of the chunk totals' weights over the block merges (the
    /// merge adds weights plainly), folded in at the end of the chunk.
    merged_weight_lo: Vec<f64>,
    seen: Vec<bool>,
    touched: Vec<usize>,
    /// The same for the unweighted global statistics (only when the fit is weighted).
    global_shift: AlignedBuf,
    global_has_shift: bool,
    global_sum: AlignedBuf,
    global_sq_dev: AlignedBuf,
    global_dev_sum: AlignedBuf,
    codes: Vec<usize>,
    row_weights: Vec<f64>,
    /// Row-major f64 copy of one block, for layouts without contiguous rows or columns.
    packed: Vec<f64>,
    /// Accumulator copies of the one-pass kernel (a power of two): row `i` adds into copy
    /// `i mod copies`, so consecutive rows of one class do not wait on each other's stores.
    /// `sum`/`sq_dev` hold `copies` tables of `C × d` (`global_*`: of `d`); copy 0 is the one
    /// the merge reads, the others are folded into it in a fixed order.
    copies: usize,
    n_classes: usize,
    /// Bucketed path: per-class counts, then write positions, of the current block (all zero
    /// between blocks).
    bucket_pos: Vec<u32>,
    /// Bucketed path: the classes of the current block, in order of first appearance.
    block_classes: Vec<usize>,
    /// Bucketed path: each class of the block with its range of `order`.
    buckets: Vec<(usize, std::ops::Range<usize>)>,
    /// Bucketed path: the block's row indices grouped by class.
    order: Vec<u32>,
    /// Bucketed path: `0..block`, the row order of the global statistics of a weighted fit.
    iota: Vec<u32>,
    /// Bucketed path: rounding errors of `sum` and `sq_dev` (compensated summation).
    sum_lo: AlignedBuf,
    sq_dev_lo: AlignedBuf,
    /// Bucketed path: rounding errors of `global_sum` (first d) and `global_sq_dev` (last d).
    global_lo: AlignedBuf,
    /// Bucketed path: per bucket of the block, whether its class got its shift in this block.
    fresh: Vec<bool>,
    /// Bucketed path: whether the global shift was set in this block.
    fresh_global: bool,
}

impl BlockScratch {
    fn new(n_classes: usize, d: usize, block: usize) -> Self {
        let copies = accumulator_copies(n_classes, d);
        BlockScratch {
            shift: AlignedBuf::zeros(n_classes * d),
            has_shift: vec![false; n_classes],
            sum: AlignedBuf::zeros(copies * n_classes * d),
            sq_dev: AlignedBuf::zeros(copies * n_classes * d),
            dev_sum: AlignedBuf::zeros(n_classes * d),
            weight: vec![0.0; n_classes],
            weight_lo: vec![0.0; n_classes],
            merged_weight_lo: vec![0.0; n_classes],
            seen: vec![false; n_classes],
            touched: Vec::with_capacity(n_classes.min(block)),
            global_shift: AlignedBuf::zeros(d),
            global_has_shift: false,
            global_sum: AlignedBuf::zeros(copies * d),
            global_sq_dev: AlignedBuf::zeros(copies * d),
            global_dev_sum: AlignedBuf::zeros(d),
            codes: Vec::with_capacity(block),
            row_weights: Vec::with_capacity(block),
            packed: Vec::new(),
            copies,
            n_classes,
            bucket_pos: vec![0; n_classes],
            block_classes: Vec::new(),
            buckets: Vec::new(),
            order: Vec::with_capacity(block),
            iota: Vec::new(),
            fresh: Vec::new(),
            fresh_global: false,
            sum_lo: AlignedBuf::zeros(0),
            sq_dev_lo: AlignedBuf::zeros(0),
            global_lo: AlignedBuf::zeros(0),
        }
    }

    /// Give `class` the shift `k` (its `d` values) and mark it as present in the chunk.
    fn set_shift(&mut self, class: usize, k: &[f64]) {
        let d = k.len();
        self.shift[class * d..(class + 1) * d].copy_from_slice(k);
        self.has_shift[class] = true;
        self.touch(class);
    }

    /// Add the weight `w` of one row to `class`, compensated.
    #[inline(always)]
    fn add_weight(&mut self, class: usize, w: f64) {
        let (hi, lo) = two_sum(self.weight[class], w);
        self.weight[class] = hi;
        self.weight_lo[class] += lo;
    }

    /// Renormalise the touched classes' weights: `weight` becomes the rounded total and
    /// `weight_lo` its exact rest (idempotent), which the merge carries on.
    fn fold_weights(&mut self) {
        for &c in &self.touched {
            (self.weight[c], self.weight_lo[c]) = two_sum(self.weight[c], self.weight_lo[c]);
        }
    }

    /// Mark `class` as present in this block; true if it has no shift yet.
    #[inline(always)]
    fn touch(&mut self, class: usize) -> bool {
        if !self.seen[class] {
            self.seen[class] = true;
            self.touched.push(class);
        }
        !self.has_shift[class]
    }
}

#[cfg(test)]
thread_local! {
    /// Chunks of this thread whose fast path failed its guard and went to the block-wise path
    /// (tests read it to check that the fast paths hold where they should).
    pub static GUARD_FALLBACKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn chunk_stats<E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    rows: std::ops::Range<usize>,
    block: usize,
    level: SimdLevel,
    scale: WeightScale<'_>,
) -> Result<ClassStats> {
    let d = input.x.ncols();
    let mut stats = ClassStats {
        classes: Moments::zeros(input.n_classes, d),
        global: Moments::zeros(1, d),
    };
    let by_rows = input.x.strides()[1] == 1 || d == 1;
    if d > 0 && by_rows && vector_elem::<E>() {
        let weighted = input.weights.is_some();
        let fast = if tiny_fits(input, level) {
            chunk_tiny(input, rows.clone())?
        } else if streamed_fits(input.n_classes, d, weighted, std::mem::size_of::<E>()) {
            chunk_streamed(input, rows.clone(), level)?
        } else {
            chunk_bucketed(input, rows.clone(), level, scale)?
        };
        if let Some(stats) = fast {
            return Ok(stats);
        }
        #[cfg(test)]
        GUARD_FALLBACKS.with(|count| count.set(count.get() + 1));
    }
    let mut scratch = BlockScratch::new(input.n_classes, d, block);
    let mut start = rows.start;
    while start < rows.end {
        let end = (start + block).min(rows.end);
        load_codes_and_weights(input, start..end, &mut scratch, scale)?;
        let x_block = input.x.slice(ndarray::s![start..end, ..]);
        let weighted = input.weights.is_some();
        if !block_onepass(&stats, x_block, weighted, &mut scratch, level) {
            // Cancellation (or a non-finite value): redo the block, still in cache, with the
            // exact corrected two-pass.
            reset_block(&mut scratch, d, weighted);
            block_stats(x_block, weighted, &mut scratch, level);
        }
        merge_block(
            &mut stats,
            &mut scratch,
            end - start,
            input.weights.is_some(),
        );
        start = end;
    }
    fold_merged_weights(&mut stats, &mut scratch);
    if !stats.classes.all_finite() || !stats.global.all_finite() {
        if let Some(err) = first_non_finite(input.x, rows.clone()) {
            return Err(err);
        }
        // Finite input whose block sums overflowed (weights near 1e300 times large
        // deviations, or near-subnormal weights): redo the chunk row by row with the merge
        // update, which never forms w·(x − K). If the statistics themselves exceed float64,
        // the caller's final check reports the overflow.
        return Ok(chunk_stats_rowwise(input, rows, scale));
    }
    Ok(stats)
}

/// Overflow-safe fallback: every row is merged as a group of one (West's weighted updating,
/// 1979, in the Schubert–Gertz form of [`merge_group`]): one division per row, products
/// `δ·(W·w/W')·δ` that stay finite whenever the statistics do.
fn chunk_stats_rowwise<E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    rows: std::ops::Range<usize>,
    scale: WeightScale<'_>,
) -> ClassStats {
    let d = input.x.ncols();
    let mut stats = ClassStats {
        classes: Moments::zeros(input.n_classes, d),
        global: Moments::zeros(1, d),
    };
    let zeros = vec![0.0; d];
    let mut row_values = vec![0.0; d];
    // The merge adds each row's weight plainly: keep the roundings, as the kernels do.
    let mut weight_lo = vec![0.0; input.n_classes];
    for row in rows {
        for (v, x) in row_values.iter_mut().zip(input.x.row(row).iter()) {
            *v = x.to_f64();
        }
        // Labels and weights were validated by the main pass.
        let class = input.labels[row].to_i64() as usize;
        let weight = input.weights.map_or(1.0, |w| scale.apply(w[row], class));
        let span = class * d..(class + 1) * d;
        let classes = &mut stats.classes;
        weight_lo[class] += two_sum(classes.weight[class], weight).1;
        merge_group(
            GroupMut {
                weight: &mut classes.weight[class],
                mean: &mut classes.mean[span.clone()],
                mean_lo: &mut classes.mean_lo[span.clone()],
                m2: &mut classes.m2[span],
            },
            weight,
            &row_values,
            &zeros,
            &zeros,
        );
        if input.weights.is_some() {
            let global = &mut stats.global;
            merge_group(
                GroupMut {
                    weight: &mut global.weight[0],
                    mean: &mut global.mean,
                    mean_lo: &mut global.mean_lo,
                    m2: &mut global.m2,
                },
                1.0,
                &row_values,
                &zeros,
                &zeros,
            );
        }
    }
    for (w, lo) in stats.classes.weight.iter_mut().zip(&weight_lo) {
        *w += lo;
    }
    stats
}

fn load_codes_and_weights<E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    rows: std::ops::Range<usize>,
    scratch: &mut BlockScratch,
    scale: WeightScale<'_>,
) -> Result<()> {
    scratch.codes.clear();
    scratch.row_weights.clear();
    for row in rows.clone() {
        scratch.codes.push(class_code(input, row)?);
    }
    if let Some(w) = input.weights {
        for (row, &c) in rows.zip(&scratch.codes) {
            let value = w[row];
            if !(value.is_finite() && value >= 0.0) {
                return Err(GaussError::BadWeight { row, value });
            }
            scratch.row_weights.push(scale.apply(value, c));
        }
    }
    Ok(())
}

/// The class code of `row`: its label, checked to be in `0..n_classes`.
#[inline(always)]
fn class_code<E: Element, L: Label>(input: FitInput<'_, E, L>, row: usize) -> Result<usize> {
    let label = input.labels[row].to_i64();
    if label < 0 || label as u64 >= input.n_classes as u64 {
        return Err(GaussError::LabelOutOfRange {
            row,
            label,
            n_classes: input.n_classes,
        });
    }
    Ok(label as usize)
}

/// First NaN/inf of `x` in `rows`, scanning row by row.
fn first_non_finite<E: Element>(
    x: ArrayView2<'_, E>,
    rows: std::ops::Range<usize>,
) -> Option<GaussError> {
    for row in rows {
        for (col, v) in x.row(row).iter().enumerate() {
            let value = v.to_f64();
            if !value.is_finite() {
                return Some(GaussError::NonFinite {
                    what: "X",
                    row,
                    col,
                    value,
                });
            }
        }
    }
    None
}

/// How far ahead (bytes) the one-pass row kernel prefetches.
const PF_BYTES: usize = 2048;

/// Accumulator copies of the one-pass kernel: 4 while the copies stay small (they break the
/// store-to-load chains of consecutive rows of one class), else 1.
fn accumulator_copies(n_classes: usize, d: usize) -> usize {
    if n_classes.saturating_mul(d) <= 2048 {
        4
    } else {
        1
    }
}

/// Cancellation guard of the one-pass kernel: the shifted sum of squares may be at most this
/// many times the block's sum of squared deviations, which bounds the cancellation in
/// `S2 − S1·D` (and in the mean `K + D`) to a factor 16 of one rounding.
const ONE_PASS_GUARD: f64 = 16.0;

/// Scalar multiply-add fused exactly when `L`'s vectors are ([`madd`]).
#[inline(always)]
fn madd_lanes<L: Lanes>(a: f64, b: f64, c: f64) -> f64 {
    if L::FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Whether [`load_widened`] can load `E`.
#[inline(always)]
fn vector_elem<E: Element>() -> bool {
    TypeId::of::<E>() == TypeId::of::<f32>() || TypeId::of::<E>() == TypeId::of::<f64>()
}

/// One-pass shifted statistics of a block (ALGORITHMS.md §1, "shift by the running mean").
///
/// Each class `c` has its shift `K_c` (the running mean's high part, or for a class new to the
/// chunk its first positive-weight row). One pass accumulates `S1 = Σ w·t` and `S2 = Σ w·t²`
/// with `t = x − K_c` (exact by Sterbenz's lemma when `x` is within a factor 2 of `K_c`); then
/// `D = S1/W` and `m2 = S2 − S1·D`, and the block mean is the double-double `K_c + D`.
/// The rounding error of `m2` is about `u·(n_b + 2)·S2/m2` relative, and that of the mean
/// `u·|D|/|K + D|`; both are bounded by the guard `S2 ≤ 16·m2` (note `S2/m2 = 1 + D²W/m2`, so
/// it also bounds `|D|` by `4σ_b`). Returns false, with the scratch dirty, when the guard fails
/// for any (class, feature), or a value is not finite, or the layout has no contiguous rows
/// or columns: the caller then redoes the block with the exact corrected two-pass.
fn block_onepass<E: Element>(
    stats: &ClassStats,
    x: ArrayView2<'_, E>,
    weighted: bool,
    scratch: &mut BlockScratch,
    level: SimdLevel,
) -> bool {
    let (rows, d) = x.dim();
    if rows == 0 || d == 0 {
        return false;
    }
    let (row_stride, col_stride) = (x.strides()[0], x.strides()[1]);
    let by_rows = col_stride == 1 || d == 1;
    if !by_rows && row_stride != 1 {
        return false;
    }
    prescan_block(x, weighted, scratch);
    if by_rows {
        dispatch_rows_onepass(x.as_ptr(), row_stride, rows, d, weighted, scratch, level);
    } else {
        dispatch_cols_onepass(x.as_ptr(), col_stride, rows, d, weighted, scratch, level);
    }
    fold_copies(scratch, d, weighted);
    finish_onepass(stats, scratch, d, rows, weighted)
}

/// Touch every class of the block, set the shifts of classes that have none (first
/// positive-weight row; the global shift is the first row) and add up the class weights.
fn prescan_block<E: Element>(x: ArrayView2<'_, E>, weighted: bool, scratch: &mut BlockScratch) {
    let d = x.ncols();
    for i in 0..scratch.codes.len() {
        let c = scratch.codes[i];
        let w = if weighted {
            scratch.row_weights[i]
        } else {
            1.0
        };
        if scratch.touch(c) && w > 0.0 {
            for (k, v) in scratch.shift[c * d..(c + 1) * d].iter_mut().zip(x.row(i)) {
                *k = v.to_f64();
            }
            scratch.has_shift[c] = true;
        }
        scratch.add_weight(c, w);
    }
    if weighted && !scratch.global_has_shift {
        for (k, v) in scratch.global_shift.iter_mut().zip(x.row(0)) {
            *k = v.to_f64();
        }
        scratch.global_has_shift = true;
    }
}

/// Undo a failed one-pass: zero the block's sums and weights, keep the touched set and shifts.
fn reset_block(scratch: &mut BlockScratch, d: usize, weighted: bool) {
    let per_copy = scratch.n_classes * d;
    for &c in &scratch.touched {
        for k in 0..scratch.copies {
            let span = k * per_copy + c * d..k * per_copy + (c + 1) * d;
            scratch.sum[span.clone()].fill(0.0);
            scratch.sq_dev[span].fill(0.0);
        }
        scratch.dev_sum[c * d..(c + 1) * d].fill(0.0);
        scratch.weight[c] = 0.0;
        scratch.weight_lo[c] = 0.0;
    }
    if weighted {
        scratch.global_sum.fill(0.0);
        scratch.global_sq_dev.fill(0.0);
        scratch.global_dev_sum.fill(0.0);
    }
}

/// Fold accumulator copies 1.. into copy 0, in copy order, and zero them.
fn fold_copies(scratch: &mut BlockScratch, d: usize, weighted: bool) {
    let per_copy = scratch.n_classes * d;
    for k in 1..scratch.copies {
        let (head, tail) = scratch.sum.split_at_mut(k * per_copy);
        let (qhead, qtail) = scratch.sq_dev.split_at_mut(k * per_copy);
        for &c in &scratch.touched {
            let span = c * d..(c + 1) * d;
            for (a, b) in head[span.clone()].iter_mut().zip(&mut tail[span.clone()]) {
                *a += *b;
                *b = 0.0;
            }
            for (a, b) in qhead[span.clone()].iter_mut().zip(&mut qtail[span]) {
                *a += *b;
                *b = 0.0;
            }
        }
        if weighted {
            let (head, tail) = scratch.global_sum.split_at_mut(k * d);
            for (a, b) in head[..d].iter_mut().zip(&mut tail[..d]) {
                *a += *b;
                *b = 0.0;
            }
            let (head, tail) = scratch.global_sq_dev.split_at_mut(k * d);
            for (a, b) in head[..d].iter_mut().zip(&mut tail[..d]) {
                *a += *b;
                *b = 0.0;
            }
        }
    }
}

/// `(S1, S2) → (D, m2)` for one group of a block of weight `weight`, merging into running
/// statistics of weight `running`; false if the guard fails for any feature.
///
/// The guard compares `S2` with the block's whole contribution to the running sum of squared
/// deviations, `m2 + D²·w·W/(W + w)` (its own spread plus the merge term): the one-pass error
/// `≈ u·(n_b + 3)·S2` is then at most 16× one rounding of what the block adds to the total,
/// and these contributions are all ≥ 0, so the relative error of the final `m2` stays
/// `O(u·n_b)` however small a block's own spread is (a class with one row in a block has
/// `m2 = 0`). A block that starts the chunk (`W = 0`) must have `S2 ≤ 16·m2` itself.
#[inline]
fn finish_group(
    weight: f64,
    running: f64,
    s1: &mut [f64],
    s2: &mut [f64],
    residual: &mut [f64],
) -> bool {
    if weight <= 0.0 {
        // Zero-weight rows only: every w·t is 0 (or NaN, which the global statistics catch).
        s1.fill(0.0);
        s2.fill(0.0);
        return true;
    }
    let cross = if running > 0.0 {
        weight * (running / (running + weight))
    } else {
        0.0
    };
    let mut ok = true;
    for ((a, q), r) in s1.iter_mut().zip(s2.iter_mut()).zip(residual) {
        // A correctly rounded division, and its exact remainder `S1 − D·W` (TwoProduct), which
        // `correct_block_group` turns into the mean's low part: the block mean is then `K + S1/W`
        // to about u², like the two-pass's corrected mean.
        let mean = *a / weight;
        let m2 = *q - *a * mean;
        // `!(≤)` also rejects NaN: overflowed or non-finite sums go to the two-pass, which
        // either recovers (squares of deviations from the block mean are smaller) or
        // propagates the NaN/inf to the chunk-end check.
        ok &= *q <= ONE_PASS_GUARD * (m2 + mean * mean * cross);
        let (p, e) = two_prod(mean, weight);
        let rem = (*a - p) - e;
        *r = if rem.is_finite() { rem } else { 0.0 };
        *a = mean;
        *q = clamp_non_negative(m2);
    }
    ok
}

/// `max(v, 0)` that keeps NaN (`f64::max` would turn NaN into 0 and hide an overflow).
#[inline(always)]
fn clamp_non_negative(v: f64) -> f64 {
    if v < 0.0 { 0.0 } else { v }
}

/// Dekker's TwoProduct without FMA: `(p, e)` with `p = fl(a·b)` and `a·b = p + e` exactly
/// (barring overflow), the same on every SIMD level.
#[inline(always)]
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    #[inline(always)]
    fn split(v: f64) -> (f64, f64) {
        let c = 134_217_729.0 * v; // 2^27 + 1
        let hi = c - (c - v);
        (hi, v - hi)
    }
    let p = a * b;
    let (ah, al) = split(a);
    let (bh, bl) = split(b);
    (p, ((ah * bh - p) + ah * bl + al * bh) + al * bl)
}

/// Turn the one-pass sums into block means and squared deviations; false if any guard fails.
fn finish_onepass(
    stats: &ClassStats,
    scratch: &mut BlockScratch,
    d: usize,
    rows: usize,
    weighted: bool,
) -> bool {
    let mut ok = true;
    scratch.fold_weights();
    for &c in &scratch.touched {
        let span = c * d..(c + 1) * d;
        ok &= finish_group(
            scratch.weight[c],
            stats.classes.weight[c],
            &mut scratch.sum[span.clone()],
            &mut scratch.sq_dev[span.clone()],
            &mut scratch.dev_sum[span],
        );
    }
    if weighted {
        ok &= finish_group(
            rows as f64,
            stats.global.weight[0],
            &mut scratch.global_sum[..d],
            &mut scratch.global_sq_dev[..d],
            &mut scratch.global_dev_sum,
        );
    }
    ok
}

/// Row-major one-pass kernel: row `i` (at `base + i·row_stride`, contiguous) adds `w·t` and
/// `w·t²` into accumulator copy `i mod copies` of its class, `L::LANES` features at a time.
///
/// # Safety
/// `base + i·row_stride + j` must be readable for `i < codes.len()`, `j < d`; the scratch
/// tables must have the sizes [`BlockScratch::new`] gives them; the CPU must support `L`.
#[inline(always)]
unsafe fn rows_onepass<L: Lanes, E: Element, const WEIGHTED: bool>(
    base: *const E,
    row_stride: isize,
    d: usize,
    scratch: &mut BlockScratch,
) {
    let nv = if vector_elem::<E>() { d / L::LANES } else { 0 };
    let vec_end = nv * L::LANES;
    let mask = scratch.copies - 1;
    let per_copy = scratch.n_classes * d;
    let shift = scratch.shift.as_ptr();
    let s1 = scratch.sum.as_mut_ptr();
    let s2 = scratch.sq_dev.as_mut_ptr();
    let gshift = scratch.global_shift.as_ptr();
    let g1 = scratch.global_sum.as_mut_ptr();
    let g2 = scratch.global_sq_dev.as_mut_ptr();
    // Software prefetch PF_BYTES ahead: the accumulator stores otherwise hold back the hardware
    // prefetcher, and the loop waits on DRAM.
    let row_bytes = d * std::mem::size_of::<E>();
    let ahead = (PF_BYTES / row_bytes.max(1)).max(1) as isize * row_stride;
    for (i, &c) in scratch.codes.iter().enumerate() {
        let next = base
            .wrapping_offset(i as isize * row_stride + ahead)
            .cast::<u8>();
        for b in (0..row_bytes).step_by(64) {
            prefetch_read(next.wrapping_add(b));
        }
        // SAFETY: the caller guarantees the rows and table sizes; `c < n_classes` (checked when
        // the codes were loaded), copy `i & mask < copies`.
        unsafe {
            let row = base.offset(i as isize * row_stride);
            let k = shift.add(c * d);
            let off = (i & mask) * per_copy + c * d;
            let (a1, a2) = (s1.add(off), s2.add(off));
            let goff = (i & mask) * d;
            let (b1, b2) = (g1.add(goff), g2.add(goff));
            let w = if WEIGHTED {
                *scratch.row_weights.get_unchecked(i)
            } else {
                1.0
            };
            let wv = L::splat(w);
            for v in 0..nv {
                let j = v * L::LANES;
                let xv = load_widened::<L, E>(row.add(j));
                let t = L::sub(xv, L::load(k.add(j)));
                if WEIGHTED {
                    let wt = L::mul(wv, t);
                    L::store(a1.add(j), L::add(L::load(a1.add(j)), wt));
                    L::store(a2.add(j), L::fmadd(wt, t, L::load(a2.add(j))));
                    let tg = L::sub(xv, L::load(gshift.add(j)));
                    L::store(b1.add(j), L::add(L::load(b1.add(j)), tg));
                    L::store(b2.add(j), L::fmadd(tg, tg, L::load(b2.add(j))));
                } else {
                    L::store(a1.add(j), L::add(L::load(a1.add(j)), t));
                    L::store(a2.add(j), L::fmadd(t, t, L::load(a2.add(j))));
                }
            }
            for j in vec_end..d {
                let xv = (*row.add(j)).to_f64();
                let t = xv - *k.add(j);
                if WEIGHTED {
                    let wt = w * t;
                    *a1.add(j) += wt;
                    *a2.add(j) = madd_lanes::<L>(wt, t, *a2.add(j));
                    let tg = xv - *gshift.add(j);
                    *b1.add(j) += tg;
                    *b2.add(j) = madd_lanes::<L>(tg, tg, *b2.add(j));
                } else {
                    *a1.add(j) += t;
                    *a2.add(j) = madd_lanes::<L>(t, t, *a2.add(j));
                }
            }
        }
    }
}

/// Column-major one-pass kernel: each column (at `base + j·col_stride`, contiguous) is one
/// stream; row `i` adds into accumulator copy `i mod copies` of its class.
///
/// # Safety
/// As [`rows_onepass`], with columns in place of rows.
#[inline(always)]
unsafe fn cols_onepass<E: Element, const WEIGHTED: bool, const FMA: bool>(
    base: *const E,
    col_stride: isize,
    d: usize,
    scratch: &mut BlockScratch,
) {
    let mask = scratch.copies - 1;
    let per_copy = scratch.n_classes * d;
    let rows = scratch.codes.len();
    for j in 0..d {
        // SAFETY: the caller guarantees the columns; indices stay inside the tables.
        unsafe {
            let col = std::slice::from_raw_parts(base.offset(j as isize * col_stride), rows);
            let shift = scratch.shift.as_ptr().add(j);
            let s1 = scratch.sum.as_mut_ptr().add(j);
            let s2 = scratch.sq_dev.as_mut_ptr().add(j);
            let gk = scratch.global_shift[j];
            let mut g1 = [0.0f64; 4];
            let mut g2 = [0.0f64; 4];
            for (i, (&c, &v)) in scratch.codes.iter().zip(col).enumerate() {
                let x = v.to_f64();
                let t = x - *shift.add(c * d);
                let off = (i & mask) * per_copy + c * d;
                if WEIGHTED {
                    let wt = *scratch.row_weights.get_unchecked(i) * t;
                    *s1.add(off) += wt;
                    *s2.add(off) = madd::<FMA>(wt, t, *s2.add(off));
                    let tg = x - gk;
                    g1[i & 3] += tg;
                    g2[i & 3] = madd::<FMA>(tg, tg, g2[i & 3]);
                } else {
                    *s1.add(off) += t;
                    *s2.add(off) = madd::<FMA>(t, t, *s2.add(off));
                }
            }
            if WEIGHTED {
                scratch.global_sum[j] = (g1[0] + g1[1]) + (g1[2] + g1[3]);
                scratch.global_sq_dev[j] = (g2[0] + g2[1]) + (g2[2] + g2[3]);
            }
        }
    }
}

fn dispatch_rows_onepass<E: Element>(
    base: *const E,
    row_stride: isize,
    rows: usize,
    d: usize,
    weighted: bool,
    scratch: &mut BlockScratch,
    level: SimdLevel,
) {
    debug_assert_eq!(scratch.codes.len(), rows);
    #[inline(always)]
    unsafe fn body<L: Lanes, E: Element>(
        p: *const E,
        rs: isize,
        d: usize,
        w: bool,
        s: &mut BlockScratch,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            if w {
                rows_onepass::<L, E, true>(p, rs, d, s)
            } else {
                rows_onepass::<L, E, false>(p, rs, d, s)
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<E: Element>(p: *const E, rs: isize, d: usize, w: bool, s: &mut BlockScratch) {
        // SAFETY: forwarded from the caller.
        unsafe { body::<Avx2Lanes, E>(p, rs, d, w, s) }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
    unsafe fn avx512<E: Element>(p: *const E, rs: isize, d: usize, w: bool, s: &mut BlockScratch) {
        // SAFETY: forwarded from the caller.
        unsafe { body::<Avx512Lanes, E>(p, rs, d, w, s) }
    }
    // SAFETY (all arms): `base`/`row_stride` address the block's `rows × d` elements (an
    // ndarray view), the scratch was built for this shape, and simd_dispatch! runs each AVX
    // arm only on a CPU with its features.
    simd_dispatch!(
        level,
        unsafe { body::<ScalarLanes, E>(base, row_stride, d, weighted, scratch) },
        unsafe { avx2(base, row_stride, d, weighted, scratch) },
        unsafe { avx512(base, row_stride, d, weighted, scratch) }
    )
}

fn dispatch_cols_onepass<E: Element>(
    base: *const E,
    col_stride: isize,
    rows: usize,
    d: usize,
    weighted: bool,
    scratch: &mut BlockScratch,
    level: SimdLevel,
) {
    debug_assert_eq!(scratch.codes.len(), rows);
    #[inline(always)]
    unsafe fn body<E: Element, const FMA: bool>(
        p: *const E,
        cs: isize,
        d: usize,
        w: bool,
        s: &mut BlockScratch,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            if w {
                cols_onepass::<E, true, FMA>(p, cs, d, s)
            } else {
                cols_onepass::<E, false, FMA>(p, cs, d, s)
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<E: Element>(p: *const E, cs: isize, d: usize, w: bool, s: &mut BlockScratch) {
        // SAFETY: forwarded from the caller.
        unsafe { body::<E, true>(p, cs, d, w, s) }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
    unsafe fn avx512<E: Element>(p: *const E, cs: isize, d: usize, w: bool, s: &mut BlockScratch) {
        // SAFETY: forwarded from the caller.
        unsafe { body::<E, true>(p, cs, d, w, s) }
    }
    // SAFETY: as in `dispatch_rows_onepass`, with columns.
    simd_dispatch!(
        level,
        unsafe { body::<E, false>(base, col_stride, d, weighted, scratch) },
        unsafe { avx2(base, col_stride, d, weighted, scratch) },
        unsafe { avx512(base, col_stride, d, weighted, scratch) }
    )
}

/// Both passes over one block, with the layout-specific loop and SIMD level.
fn block_stats<E: Element>(
    x: ArrayView2<'_, E>,
    weighted: bool,
    scratch: &mut BlockScratch,
    level: SimdLevel,
) {
    let (rows, d) = x.dim();
    if rows == 0 {
        return;
    }
    if d == 0 {
        for i in 0..rows {
            let c = scratch.codes[i];
            scratch.touch(c);
            let w = if weighted {
                scratch.row_weights[i]
            } else {
                1.0
            };
            scratch.add_weight(c, w);
        }
        return;
    }
    let (row_stride, col_stride) = (x.strides()[0], x.strides()[1]);
    if col_stride == 1 || d == 1 {
        // Rows are contiguous (C order, sliced rows, negative row strides, stride-0 rows).
        if let Some(all) = x.as_slice() {
            // One contiguous run of rows: plain slicing, no per-row view.
            let row_at = |i: usize| -> &[E] { &all[i * d..(i + 1) * d] };
            dispatch_rows(&row_at, rows, d, weighted, scratch, level);
        } else {
            let row_at = |i: usize| -> &[E] { x.row(i).to_slice().unwrap_or(&[]) };
            dispatch_rows(&row_at, rows, d, weighted, scratch, level);
        }
    } else if row_stride == 1 {
        // Fortran order: walk each column as one contiguous stream.
        let col_at = |j: usize| -> &[E] { x.column(j).to_slice().unwrap_or(&[]) };
        dispatch_cols(&col_at, rows, d, weighted, scratch, level);
    } else {
        // Any other strides: pack the block row-major in cache (not a copy of the input).
        let mut packed = std::mem::take(&mut scratch.packed);
        packed.clear();
        packed.extend(x.iter().map(|v| v.to_f64()));
        let row_at = |i: usize| -> &[f64] { &packed[i * d..(i + 1) * d] };
        dispatch_rows(&row_at, rows, d, weighted, scratch, level);
        scratch.packed = packed;
    }
}

fn dispatch_rows<'r, E: Element, F: Fn(usize) -> &'r [E]>(
    row_at: &F,
    rows: usize,
    d: usize,
    weighted: bool,
    scratch: &mut BlockScratch,
    level: SimdLevel,
) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn avx2<'r, E: Element, F: Fn(usize) -> &'r [E]>(
        f: &F,
        r: usize,
        d: usize,
        w: bool,
        s: &mut BlockScratch,
    ) {
        rows_kernel::<E, F, true>(f, r, d, w, s)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
    fn avx512<'r, E: Element, F: Fn(usize) -> &'r [E]>(
        f: &F,
        r: usize,
        d: usize,
        w: bool,
        s: &mut BlockScratch,
    ) {
        rows_kernel::<E, F, true>(f, r, d, w, s)
    }
    simd_dispatch!(
        level,
        rows_kernel::<E, F, false>(row_at, rows, d, weighted, scratch),
        // SAFETY: simd_dispatch! evaluates each arm only on a CPU with its features.
        unsafe { avx2(row_at, rows, d, weighted, scratch) },
        // SAFETY: as above.
        unsafe { avx512(row_at, rows, d, weighted, scratch) }
    )
}

fn dispatch_cols<'r, E: Element>(
    col_at: &dyn Fn(usize) -> &'r [E],
    rows: usize,
    d: usize,
    weighted: bool,
    scratch: &mut BlockScratch,
    level: SimdLevel,
) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn avx2<'r, E: Element>(
        f: &dyn Fn(usize) -> &'r [E],
        r: usize,
        d: usize,
        w: bool,
        s: &mut BlockScratch,
    ) {
        cols_kernel::<E, true>(f, r, d, w, s)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
    fn avx512<'r, E: Element>(
        f: &dyn Fn(usize) -> &'r [E],
        r: usize,
        d: usize,
        w: bool,
        s: &mut BlockScratch,
    ) {
        cols_kernel::<E, true>(f, r, d, w, s)
    }
    simd_dispatch!(
        level,
        cols_kernel::<E, false>(col_at, rows, d, weighted, scratch),
        // SAFETY: simd_dispatch! evaluates each arm only on a CPU with its features.
        unsafe { avx2(col_at, rows, d, weighted, scratch) },
        // SAFETY: as above.
        unsafe { avx512(col_at, rows, d, weighted, scratch) }
    )
}

/// Turn the per-class shifted sums of a block into block means `K + D`, re-split as
/// `K' + D'` with `K' = fl(K + D)` and `D'` the exact rest, so that the second pass subtracts
/// a shift next to the data. The shift is the class's first row, which may be an outlier far
/// from the rest: `x − K` then rounds by `u·|K|` in every row, the same way for equal rows, and
/// the two-pass mean was 1e-12 off (a row of 32770 then eight rows of 1.2 with weight 2396,
/// in Fortran order; found by the Hypothesis boundary test). `x − K'` rounds by
/// `u·|x − mean|` at most.
#[inline(always)]
fn finish_means(scratch: &mut BlockScratch, d: usize, rows: usize, weighted: bool) {
    fn recentre(shift: &mut [f64], sum: &mut [f64], mean_of: impl Fn(f64) -> f64) {
        for (k, s) in shift.iter_mut().zip(sum) {
            let d = mean_of(*s);
            let (hi, lo) = two_sum(*k, d);
            (*k, *s) = if hi.is_finite() { (hi, lo) } else { (*k, d) };
        }
    }
    scratch.fold_weights();
    for &c in &scratch.touched {
        let w = scratch.weight[c];
        if w > 0.0 {
            // A division per (class, feature) and block, not a reciprocal: 1/w overflows for
            // subnormal weights.
            let span = c * d..(c + 1) * d;
            recentre(
                &mut scratch.shift[span.clone()],
                &mut scratch.sum[span],
                |s| s / w,
            );
        }
    }
    if weighted {
        let inv = 1.0 / rows as f64;
        recentre(
            &mut scratch.global_shift,
            &mut scratch.global_sum[..d],
            |s| s * inv,
        );
    }
}

/// Row-major two-pass over a block (pass A: shifted sums; pass B: squared deviations).
#[inline(always)]
fn rows_kernel<'r, E: Element, F: Fn(usize) -> &'r [E], const FMA: bool>(
    row_at: &F,
    rows: usize,
    d: usize,
    weighted: bool,
    scratch: &mut BlockScratch,
) {
    let span = |c: usize| c * d..(c + 1) * d;
    for i in 0..rows {
        let c = scratch.codes[i];
        let row = &row_at(i)[..d];
        // A zero-weight row must not become the shift: it may lie far from the class.
        if scratch.touch(c) && (!weighted || scratch.row_weights[i] > 0.0) {
            for (k, &v) in scratch.shift[span(c)].iter_mut().zip(row) {
                *k = v.to_f64();
            }
            scratch.has_shift[c] = true;
        }
        let shift = &scratch.shift[span(c)];
        let sum = &mut scratch.sum[span(c)];
        if weighted {
            let w = scratch.row_weights[i];
            let (hi, lo) = two_sum(scratch.weight[c], w);
            scratch.weight[c] = hi;
            scratch.weight_lo[c] += lo;
            for ((s, &k), &v) in sum.iter_mut().zip(shift).zip(row) {
                *s = madd::<FMA>(w, v.to_f64() - k, *s);
            }
            if !scratch.global_has_shift {
                for (k, &v) in scratch.global_shift.iter_mut().zip(row) {
                    *k = v.to_f64();
                }
                scratch.global_has_shift = true;
            }
            for ((g, &k), &v) in scratch
                .global_sum
                .iter_mut()
                .zip(&scratch.global_shift)
                .zip(row)
            {
                *g += v.to_f64() - k;
            }
        } else {
            scratch.weight[c] += 1.0;
            for ((s, &k), &v) in sum.iter_mut().zip(shift).zip(row) {
                *s += v.to_f64() - k;
            }
        }
    }
    finish_means(scratch, d, rows, weighted);
    for i in 0..rows {
        let c = scratch.codes[i];
        let row = &row_at(i)[..d];
        let shift = &scratch.shift[span(c)];
        let mean = &scratch.sum[span(c)];
        let sq = scratch.sq_dev[span(c)]
            .iter_mut()
            .zip(&mut scratch.dev_sum[span(c)]);
        if weighted {
            let w = scratch.row_weights[i];
            for (((q, e), &m), (&k, &v)) in sq.zip(mean).zip(shift.iter().zip(row)) {
                let t = (v.to_f64() - k) - m;
                let wt = w * t;
                *q = madd::<FMA>(wt, t, *q);
                *e += wt;
            }
            let global = scratch
                .global_sq_dev
                .iter_mut()
                .zip(&mut scratch.global_dev_sum);
            let centre = scratch.global_sum.iter().zip(&scratch.global_shift);
            for (((q, e), (&m, &k)), &v) in global.zip(centre).zip(row) {
                let t = (v.to_f64() - k) - m;
                *q = madd::<FMA>(t, t, *q);
                *e += t;
            }
        } else {
            for (((q, e), &m), (&k, &v)) in sq.zip(mean).zip(shift.iter().zip(row)) {
                let t = (v.to_f64() - k) - m;
                *q = madd::<FMA>(t, t, *q);
                *e += t;
            }
        }
    }
}

/// Column-major two-pass over a block: each column of the block is one contiguous stream.
#[inline(always)]
fn cols_kernel<'r, E: Element, const FMA: bool>(
    col_at: &dyn Fn(usize) -> &'r [E],
    rows: usize,
    d: usize,
    weighted: bool,
    scratch: &mut BlockScratch,
) {
    for i in 0..rows {
        let c = scratch.codes[i];
        if scratch.touch(c) && (!weighted || scratch.row_weights[i] > 0.0) {
            for j in 0..d {
                scratch.shift[c * d + j] = col_at(j)[i].to_f64();
            }
            scratch.has_shift[c] = true;
        }
        let w = if weighted {
            scratch.row_weights[i]
        } else {
            1.0
        };
        scratch.add_weight(c, w);
    }
    if weighted && !scratch.global_has_shift {
        for j in 0..d {
            scratch.global_shift[j] = col_at(j)[0].to_f64();
        }
        scratch.global_has_shift = true;
    }
    for j in 0..d {
        let col = &col_at(j)[..rows];
        if weighted {
            let (mut global, global_shift) = (0.0, scratch.global_shift[j]);
            for ((&c, &w), &v) in scratch.codes.iter().zip(&scratch.row_weights).zip(col) {
                let at = c * d + j;
                scratch.sum[at] = madd::<FMA>(w, v.to_f64() - scratch.shift[at], scratch.sum[at]);
                global += v.to_f64() - global_shift;
            }
            scratch.global_sum[j] = global;
        } else {
            for (&c, &v) in scratch.codes.iter().zip(col) {
                let at = c * d + j;
                scratch.sum[at] += v.to_f64() - scratch.shift[at];
            }
        }
    }
    finish_means(scratch, d, rows, weighted);
    for j in 0..d {
        let col = &col_at(j)[..rows];
        if weighted {
            let (global_mean, global_shift) = (scratch.global_sum[j], scratch.global_shift[j]);
            let (mut global, mut global_dev) = (0.0, 0.0);
            for ((&c, &w), &v) in scratch.codes.iter().zip(&scratch.row_weights).zip(col) {
                let at = c * d + j;
                let t = (v.to_f64() - scratch.shift[at]) - scratch.sum[at];
                let wt = w * t;
                scratch.sq_dev[at] = madd::<FMA>(wt, t, scratch.sq_dev[at]);
                scratch.dev_sum[at] += wt;
                let g = (v.to_f64() - global_shift) - global_mean;
                global = madd::<FMA>(g, g, global);
                global_dev += g;
            }
            scratch.global_sq_dev[j] = global;
            scratch.global_dev_sum[j] = global_dev;
        } else {
            for (&c, &v) in scratch.codes.iter().zip(col) {
                let at = c * d + j;
                let t = (v.to_f64() - scratch.shift[at]) - scratch.sum[at];
                scratch.sq_dev[at] = madd::<FMA>(t, t, scratch.sq_dev[at]);
                scratch.dev_sum[at] += t;
            }
        }
    }
}

/// Apply the corrected two-pass correction to one group of a block and turn `shift + mean` into
/// a normalised double-double: afterwards the block mean is `shift + sum` (high, low parts) to
/// about `u²`, even when `shift` and the mean cancel, and `sq_dev` is the corrected sum.
#[inline]
fn correct_block_group(
    weight: f64,
    shift: &mut [f64],
    sum: &mut [f64],
    sq_dev: &mut [f64],
    dev_sum: &mut [f64],
) {
    if weight <= 0.0 {
        return;
    }
    for (((k, s), q), e) in shift
        .iter_mut()
        .zip(sum.iter_mut())
        .zip(sq_dev)
        .zip(dev_sum)
    {
        // A division, not a reciprocal: 1/weight overflows for subnormal weights.
        let correction = *e / weight;
        *q = clamp_non_negative(*q - correction * *e);
        let (hi, lo) = two_sum(*k, *s);
        *k = hi;
        *s = lo + correction;
        *e = 0.0;
    }
}

/// Add the kept roundings of the chunk's class weights ([`BlockScratch::merged_weight_lo`]).
fn fold_merged_weights(stats: &mut ClassStats, scratch: &mut BlockScratch) {
    for (w, lo) in stats
        .classes
        .weight
        .iter_mut()
        .zip(&mut scratch.merged_weight_lo)
    {
        *w += std::mem::take(lo);
    }
}

/// Merge a finished block into the chunk totals, move each shift to the new running mean, and
/// reset the block's scratch. The block mean is `K + D + correction`, passed as a double-double.
fn merge_block(stats: &mut ClassStats, scratch: &mut BlockScratch, rows: usize, weighted: bool) {
    let d = stats.classes.n_features;
    scratch.fold_weights();
    for &c in &scratch.touched {
        let span = c * d..(c + 1) * d;
        correct_block_group(
            scratch.weight[c],
            &mut scratch.shift[span.clone()],
            &mut scratch.sum[span.clone()],
            &mut scratch.sq_dev[span.clone()],
            &mut scratch.dev_sum[span.clone()],
        );
        let classes = &mut stats.classes;
        // The merge rounds the chunk total once per block: keep that error, and the block
        // weight's own rest.
        scratch.merged_weight_lo[c] +=
            two_sum(classes.weight[c], scratch.weight[c]).1 + scratch.weight_lo[c];
        merge_group(
            GroupMut {
                weight: &mut classes.weight[c],
                mean: &mut classes.mean[span.clone()],
                mean_lo: &mut classes.mean_lo[span.clone()],
                m2: &mut classes.m2[span.clone()],
            },
            scratch.weight[c],
            &scratch.shift[span.clone()],
            &scratch.sum[span.clone()],
            &scratch.sq_dev[span.clone()],
        );
        if classes.weight[c] > 0.0 {
            scratch.shift[span.clone()].copy_from_slice(&classes.mean[span.clone()]);
        }
        scratch.sum[span.clone()].fill(0.0);
        scratch.dev_sum[span.clone()].fill(0.0);
        scratch.sq_dev[span].fill(0.0);
        scratch.weight[c] = 0.0;
        scratch.weight_lo[c] = 0.0;
        scratch.seen[c] = false;
    }
    scratch.touched.clear();
    if weighted && rows > 0 {
        correct_block_group(
            rows as f64,
            &mut scratch.global_shift,
            &mut scratch.global_sum[..d],
            &mut scratch.global_sq_dev[..d],
            &mut scratch.global_dev_sum,
        );
        let global = &mut stats.global;
        merge_group(
            GroupMut {
                weight: &mut global.weight[0],
                mean: &mut global.mean,
                mean_lo: &mut global.mean_lo,
                m2: &mut global.m2,
            },
            rows as f64,
            &scratch.global_shift,
            &scratch.global_sum[..d],
            &scratch.global_sq_dev[..d],
        );
        scratch.global_shift.copy_from_slice(&global.mean);
        scratch.global_sum[..d].fill(0.0);
        scratch.global_sq_dev[..d].fill(0.0);
        scratch.global_dev_sum.fill(0.0);
    }
}

/// Exact weighted merge of two statistics sets given as flat arrays (what partial_fit, threads
/// and distributed fits use).
pub fn merge_stats(a: &Moments, b: &Moments) -> Result<Moments> {
    let mut out = a.clone();
    out.merge(b)?;
    Ok(out)
}

/// Convenience used by tests: statistics of a row-major slice.
pub fn class_stats_of_rows(
    x: &[f64],
    n_features: usize,
    labels: &[i64],
    weights: Option<&[f64]>,
    n_classes: usize,
) -> Result<ClassStats> {
    let n = labels.len();
    let x = ArrayView2::from_shape((n, n_features), x).map_err(|e| GaussError::ShapeMismatch {
        what: e.to_string(),
    })?;
    let input = FitInput {
        x,
        labels: ArrayView1::from(labels),
        weights: weights.map(ArrayView1::from),
        n_classes,
    };
    class_stats(input, 1, crate::simd::active_level())
}

// ---------------------------------------------------------------------------------------------
// Bucketed one-pass chunk kernel (the fast path for contiguous rows of f32/f64).
// ---------------------------------------------------------------------------------------------

/// Bytes of X per block of the bucketed path: the block is re-read in class order, so it should
/// stay in L2.
const BUCKET_BLOCK_BYTES: usize = 256 * 1024;

/// Rows per block of the bucketed path: [`BUCKET_BLOCK_BYTES`] of X, but at least 16 rows per
/// class (a class's strip of sums is loaded and stored once per block, which dominates when a
/// block holds a handful of its rows; 2e5×64×100: 11.3 → 8.6 ms), at most 1 MiB; and in
/// 64..=16384 rows.
fn bucket_block_rows(d: usize, elem_bytes: usize, n_classes: usize) -> usize {
    let row_bytes = d.max(1) * elem_bytes;
    let rows = (BUCKET_BLOCK_BYTES / row_bytes).max(16 * n_classes);
    rows.min((1 << 20) / row_bytes).clamp(64, 16_384)
}

/// Blocks with at most this many classes are grouped by per-class compaction passes instead of
/// a counting sort.
const COMPACT_MAX_CLASSES: usize = 4;

/// Vectors per register strip of the bucketed kernel: 4 vectors of S1 and 4 of S2 for each of
/// the two interleaved rows, plus 4 of shift, use 20 of the 32 AVX-512 registers.
const STRIP_VECTORS: usize = 4;

/// A software prefetch cursor over a contiguous byte range of X, kept up to a lead window ahead
/// of the block being computed. The bucketed kernel reads rows in class order, which the hardware
/// prefetcher cannot follow, and a burst of prefetches issued up front is mostly dropped; so the
/// label pass and the kernel each advance the cursor by a few lines per row they handle, and the
/// memory system streams X steadily in the background.
struct Prefetcher {
    next: *const u8,
    /// End of what may be requested now (the window ahead of the current block).
    limit: *const u8,
    /// End of the contiguous range (the chunk).
    end: *const u8,
}

impl Prefetcher {
    /// A cursor over `bytes` bytes from `start` (none when `start` is null).
    fn new(start: *const u8, bytes: usize) -> Self {
        Prefetcher {
            next: start,
            limit: start,
            end: start.wrapping_add(bytes),
        }
    }

    /// Allow requests up to `ahead` bytes past `from` (clamped to the range).
    fn open_window(&mut self, from: *const u8, ahead: usize) {
        let limit = from.wrapping_add(ahead);
        self.limit = if limit < self.end { limit } else { self.end };
    }

    /// Request every cache line before `target`, within the window.
    #[inline(always)]
    fn advance_to(&mut self, target: *const u8) {
        while self.next < target && self.next < self.limit {
            prefetch_l2(self.next);
            self.next = self.next.wrapping_add(64);
        }
    }

    /// Request the next `lines` cache lines, within the window.
    #[inline(always)]
    fn advance(&mut self, lines: usize) {
        for _ in 0..lines {
            if self.next < self.limit {
                prefetch_l2(self.next);
                self.next = self.next.wrapping_add(64);
            }
        }
    }
}

/// Where the bucketed kernel adds one group's sums: its shift `k` and the compensated sums
/// `s1 + s1_lo` (of `w·t`) and `s2 + s2_lo` (of `w·t²`), each `d` values.
#[derive(Clone, Copy)]
struct SumTables {
    k: *const f64,
    s1: *mut f64,
    s1_lo: *mut f64,
    s2: *mut f64,
    s2_lo: *mut f64,
}

impl SumTables {
    /// The same tables from feature `j` on.
    ///
    /// # Safety
    /// `j` must be within the `d` values of every table.
    #[inline(always)]
    unsafe fn at(self, j: usize) -> Self {
        // SAFETY: the caller keeps `j` inside the tables.
        unsafe {
            SumTables {
                k: self.k.add(j),
                s1: self.s1.add(j),
                s1_lo: self.s1_lo.add(j),
                s2: self.s2.add(j),
                s2_lo: self.s2_lo.add(j),
            }
        }
    }
}

/// Rows a register accumulator takes before it is added to the tables: chains of at most 32
/// additions per register (two interleaved sets), and the tables add the partial sums with
/// TwoSum, so the rounding error of `S1`/`S2` stays about `34·u·Σ|terms|` however many rows a
/// class has (plain recursive summation over a chunk measured 1.2e-13 relative on a variance
/// with one far row).
const FLUSH_ROWS: usize = 64;

/// `(hi, lo) += a` with Knuth's TwoSum: the rounding error of `hi + a` goes into `lo`.
///
/// # Safety
/// `hi`, `lo` valid for `LANES` values; the CPU supports `L`.
#[inline(always)]
unsafe fn add_compensated<L: Lanes>(hi: *mut f64, lo: *mut f64, a: L::V) {
    // SAFETY: the caller's contract.
    unsafe {
        let h = L::load(hi);
        let s = L::add(h, a);
        let bb = L::sub(s, h);
        let err = L::add(L::sub(h, L::sub(s, bb)), L::sub(a, bb));
        L::store(hi, s);
        L::store(lo, L::add(L::load(lo), err));
    }
}

/// The block read by the bucketed kernel: rows of `d` contiguous values at
/// `base + i·row_stride`, their weights (empty when unweighted), and the chunk's prefetcher.
struct BucketBlock<'a, E> {
    base: *const E,
    row_stride: isize,
    weights: &'a [f64],
    prefetch: &'a mut Prefetcher,
}

/// One row of [`bucket_strip`]: `acc1 += w·t`, `acc2 += w·t²` with `t = x − k`.
///
/// # Safety
/// As [`bucket_strip`] for row `i`.
#[inline(always)]
unsafe fn bucket_step<L: Lanes, E: Element, const WEIGHTED: bool, const NV: usize>(
    block: &mut BucketBlock<'_, E>,
    j: usize,
    k: &[L::V; NV],
    acc: (&mut [L::V; NV], &mut [L::V; NV]),
    i: u32,
) {
    // As many lines ahead as this step reads (at least one): more prefetches per step measured
    // slower (they compete with the step's own L2 reads for the miss buffers).
    block
        .prefetch
        .advance((NV * L::LANES * std::mem::size_of::<E>()).div_ceil(64));
    let (acc1, acc2) = acc;
    // SAFETY: the caller's contract covers row `i`, features `j .. j + NV·LANES`.
    unsafe {
        let row = block.base.offset(i as isize * block.row_stride).add(j);
        let w = if WEIGHTED {
            L::splat(*block.weights.get_unchecked(i as usize))
        } else {
            L::splat(1.0)
        };
        for v in 0..NV {
            let t = L::sub(load_widened::<L, E>(row.add(v * L::LANES)), k[v]);
            if WEIGHTED {
                let wt = L::mul(w, t);
                acc1[v] = L::add(acc1[v], wt);
                acc2[v] = L::fmadd(wt, t, acc2[v]);
            } else {
                acc1[v] = L::add(acc1[v], t);
                acc2[v] = L::fmadd(t, t, acc2[v]);
            }
        }
    }
}

/// One strip of `NV` vectors of `L` (features `j .. j + NV·LANES`) of the class rows `rows`:
/// the shifted sums are kept in registers over all the rows (two interleaved accumulator sets
/// break the add latency chain) and added to the chunk accumulators `s1`/`s2` once.
///
/// # Safety
/// `block` rows `i` in `rows` readable at features `j .. j + NV·LANES`, `E` f32 or f64;
/// `block.weights[i]` present when `WEIGHTED`; `shift`, `s1`, `s2` valid for `NV·LANES` values;
/// the CPU supports `L`.
#[inline(always)]
unsafe fn bucket_strip<L: Lanes, E: Element, const WEIGHTED: bool, const NV: usize>(
    block: &mut BucketBlock<'_, E>,
    j: usize,
    rows: &[u32],
    t: SumTables,
) {
    // SAFETY: the caller's contract covers every pointer formed here.
    unsafe {
        let mut k = [L::splat(0.0); NV];
        for (v, kv) in k.iter_mut().enumerate() {
            *kv = L::load(t.k.add(v * L::LANES));
        }
        let zero = L::splat(0.0);
        for group in rows.chunks(FLUSH_ROWS) {
            let mut a1 = [[zero; NV]; 2];
            let mut a2 = [[zero; NV]; 2];
            let (pairs, rest) = group.as_chunks::<2>();
            let ([a1_0, a1_1], [a2_0, a2_1]) = (&mut a1, &mut a2);
            for &[r0, r1] in pairs {
                bucket_step::<L, E, WEIGHTED, NV>(block, j, &k, (a1_0, a2_0), r0);
                bucket_step::<L, E, WEIGHTED, NV>(block, j, &k, (a1_1, a2_1), r1);
            }
            if let [r] = rest {
                bucket_step::<L, E, WEIGHTED, NV>(block, j, &k, (a1_0, a2_0), *r);
            }
            for v in 0..NV {
                let o = v * L::LANES;
                add_compensated::<L>(t.s1.add(o), t.s1_lo.add(o), L::add(a1[0][v], a1[1][v]));
                add_compensated::<L>(t.s2.add(o), t.s2_lo.add(o), L::add(a2[0][v], a2[1][v]));
            }
        }
    }
}

/// All features of the class rows `rows`: strips of [`STRIP_VECTORS`] vectors, then single
/// vectors, then the last `d mod LANES` features as scalar strips.
///
/// # Safety
/// As [`bucket_strip`] for every feature `< d`; `shift`, `s1`, `s2` valid for `d` values.
#[inline(always)]
unsafe fn bucket_rows<L: Lanes, E: Element, const WEIGHTED: bool>(
    block: &mut BucketBlock<'_, E>,
    d: usize,
    rows: &[u32],
    tables: SumTables,
) {
    // SAFETY: every strip stays inside the `d` features the caller guarantees.
    unsafe {
        let at = |j: usize| tables.at(j);
        let mut j = 0;
        while j + STRIP_VECTORS * L::LANES <= d {
            bucket_strip::<L, E, WEIGHTED, STRIP_VECTORS>(block, j, rows, at(j));
            j += STRIP_VECTORS * L::LANES;
        }
        while j + L::LANES <= d {
            bucket_strip::<L, E, WEIGHTED, 1>(block, j, rows, at(j));
            j += L::LANES;
        }
        // The last `d mod LANES` features: scalar strips (unfused multiply-add, as the scalar
        // level).
        type S = ScalarLanes;
        while d - j >= 4 {
            bucket_strip::<S, E, WEIGHTED, 4>(block, j, rows, at(j));
            j += 4;
        }
        match d - j {
            3 => bucket_strip::<S, E, WEIGHTED, 3>(block, j, rows, at(j)),
            2 => bucket_strip::<S, E, WEIGHTED, 2>(block, j, rows, at(j)),
            1 => bucket_strip::<S, E, WEIGHTED, 1>(block, j, rows, at(j)),
            _ => {}
        }
    }
}

/// Prepare one block of the bucketed path in two passes over its labels: check them and count
/// the rows of each class, then group the rows by class (a counting sort into `scratch.order`;
/// classes in order of first appearance, rows in row order within a class). Also checks the
/// weights, adds up the class weights, marks the classes seen in the chunk, and gives each class
/// that has none a shift: its first positive-weight row. Returns, per bucket, whether its class
/// got its shift in this block (and `scratch.fresh_global` for the global shift).
fn bucket_block<E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    rows: std::ops::Range<usize>,
    scratch: &mut BlockScratch,
    prefetch: &mut Prefetcher,
    scale: WeightScale<'_>,
) -> Result<()> {
    let BlockScratch {
        codes,
        row_weights,
        bucket_pos,
        block_classes,
        buckets,
        order,
        fresh,
        weight: class_weight,
        weight_lo: class_weight_lo,
        seen,
        touched,
        has_shift,
        shift,
        global_has_shift,
        global_shift,
        fresh_global,
        ..
    } = scratch;
    codes.clear();
    block_classes.clear();
    // The kernel's gathers and prefetches hide the label stream from the hardware prefetcher:
    // ask for the labels and weights one block ahead.
    let ahead = rows.len() as isize;
    let (labels, label_stride) = (input.labels.as_ptr(), input.labels.strides()[0]);
    let weights = input.weights.map(|w| (w.as_ptr(), w.strides()[0]));
    // `bucket_pos[c]` marks the classes present in the block (1) during this pass.
    for row in rows.clone() {
        let next = row as isize + ahead;
        prefetch.advance(1);
        prefetch_read(labels.wrapping_offset(next * label_stride));
        if let Some((w, stride)) = weights {
            prefetch_read(w.wrapping_offset(next * stride));
        }
        let c = class_code(input, row)?;
        codes.push(c);
        if bucket_pos[c] == 0 {
            bucket_pos[c] = 1;
            block_classes.push(c);
        }
    }
    for &c in block_classes.iter() {
        bucket_pos[c] = 0;
    }
    row_weights.clear();
    if let Some(w) = input.weights {
        for (row, &c) in rows.clone().zip(codes.iter()) {
            let value = w[row];
            if !(value.is_finite() && value >= 0.0) {
                return Err(GaussError::BadWeight { row, value });
            }
            row_weights.push(scale.apply(value, c));
        }
    }
    buckets.clear();
    // One slack slot: the compaction below stores before it knows whether the row belongs.
    order.resize(codes.len() + 1, 0);
    if block_classes.len() <= COMPACT_MAX_CLASSES {
        // Few classes: one branch-free compaction pass per class. A counting sort would chain
        // every row through its class's counter in memory (store-to-load forwarding, ~5 cycles
        // a row when consecutive rows share a class).
        let mut pos = 0usize;
        for &c in block_classes.iter() {
            let start = pos;
            for (i, &code) in codes.iter().enumerate() {
                order[pos] = i as u32;
                pos += usize::from(code == c);
            }
            buckets.push((c, start..pos));
        }
    } else {
        for &c in codes.iter() {
            bucket_pos[c] += 1;
        }
        let mut pos = 0u32;
        for &c in block_classes.iter() {
            let count = bucket_pos[c];
            buckets.push((c, pos as usize..(pos + count) as usize));
            bucket_pos[c] = pos;
            pos += count;
        }
        for (i, &c) in codes.iter().enumerate() {
            order[bucket_pos[c] as usize] = i as u32;
            bucket_pos[c] += 1;
        }
        for &c in block_classes.iter() {
            bucket_pos[c] = 0;
        }
    }
    // Per class: weight, first sighting in the chunk, shift.
    let d = input.x.ncols();
    let first = rows.start;
    fresh.clear();
    for (c, span) in buckets.iter() {
        let c = *c;
        let members = &order[span.clone()];
        if row_weights.is_empty() {
            // Counts: exact.
            class_weight[c] += members.len() as f64;
        } else {
            let (mut hi, mut lo) = (class_weight[c], class_weight_lo[c]);
            for &i in members {
                let (s, e) = two_sum(hi, row_weights[i as usize]);
                hi = s;
                lo += e;
            }
            (class_weight[c], class_weight_lo[c]) = (hi, lo);
        }
        if !seen[c] {
            seen[c] = true;
            touched.push(c);
        }
        let shift_row = if has_shift[c] {
            None
        } else if row_weights.is_empty() {
            members.first()
        } else {
            members.iter().find(|&&i| row_weights[i as usize] > 0.0)
        };
        fresh.push(shift_row.is_some());
        if let Some(&i) = shift_row {
            let values = input.x.row(first + i as usize);
            for (k, v) in shift[c * d..(c + 1) * d].iter_mut().zip(values) {
                *k = v.to_f64();
            }
            has_shift[c] = true;
        }
    }
    *fresh_global = input.weights.is_some() && !*global_has_shift;
    if *fresh_global {
        for (k, v) in global_shift.iter_mut().zip(input.x.row(first)) {
            *k = v.to_f64();
        }
        *global_has_shift = true;
    }
    Ok(())
}

/// [`bucket_rows`] on the rows `rows` of one group at the given SIMD level: adds their shifted
/// sums (weighted when `block.weights` is not empty) to `s1`/`s2`.
///
/// # Safety
/// `block.base + i·block.row_stride + j` readable for every `i` in `rows` and `j < d`, with `E`
/// f32 or f64; `block.weights`, when not empty, has an entry for every `i`; `shift`, `s1`, `s2`
/// valid for `d` values.
unsafe fn dispatch_bucket_rows<E: Element>(
    block: &mut BucketBlock<'_, E>,
    d: usize,
    rows: &[u32],
    tables: SumTables,
    level: SimdLevel,
) {
    type Tables = SumTables;
    #[inline(always)]
    unsafe fn body<L: Lanes, E: Element>(
        b: &mut BucketBlock<'_, E>,
        d: usize,
        rows: &[u32],
        t: Tables,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            if b.weights.is_empty() {
                bucket_rows::<L, E, false>(b, d, rows, t)
            } else {
                bucket_rows::<L, E, true>(b, d, rows, t)
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<E: Element>(b: &mut BucketBlock<'_, E>, d: usize, rows: &[u32], t: Tables) {
        // SAFETY: forwarded from the caller.
        unsafe { body::<Avx2Lanes, E>(b, d, rows, t) }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
    unsafe fn avx512<E: Element>(b: &mut BucketBlock<'_, E>, d: usize, rows: &[u32], t: Tables) {
        // SAFETY: forwarded from the caller.
        unsafe { body::<Avx512Lanes, E>(b, d, rows, t) }
    }
    // SAFETY (all arms): the caller's contract, and simd_dispatch! runs each AVX arm only on a
    // CPU with its features.
    simd_dispatch!(
        level,
        unsafe { body::<ScalarLanes, E>(block, d, rows, tables) },
        unsafe { avx2(block, d, rows, tables) },
        unsafe { avx512(block, d, rows, tables) }
    )
}

/// Move a fresh shift `k` (a group's first row) to the mean of the group's rows in this block,
/// so that the chunk-wide guard is not failed by a first row that happens to lie far out
/// (with hundreds of (class, feature) cells some first row is beyond 4σ in most chunks).
///
/// # Safety
/// As [`dispatch_bucket_rows`], with `k` valid for `d` values.
#[allow(clippy::too_many_arguments)]
unsafe fn centre_shift<E: Element>(
    block: &mut BucketBlock<'_, E>,
    d: usize,
    rows: &[u32],
    weight: f64,
    k: *mut f64,
    probe: &mut [f64],
    level: SimdLevel,
) {
    if weight <= 0.0 {
        return;
    }
    probe.fill(0.0);
    let p = probe.as_mut_ptr();
    // SAFETY: forwarded from the caller; `probe` holds 4·d values.
    unsafe {
        let tables = SumTables {
            k: k.cast_const(),
            s1: p,
            s1_lo: p.add(d),
            s2: p.add(2 * d),
            s2_lo: p.add(3 * d),
        };
        dispatch_bucket_rows(block, d, rows, tables, level);
        for j in 0..d {
            let centred = *k.add(j) + (*p.add(j) + *p.add(d + j)) / weight;
            if centred.is_finite() {
                *k.add(j) = centred;
            }
        }
    }
}

/// Fast path of [`chunk_stats`] for contiguous rows of f32/f64 that the register-resident and
/// streamed paths do not take (weighted fits, large class tables; ALGORITHMS.md §1, "bucketed
/// one-pass"): within each L2-sized block the rows are grouped by class, each class's shifted
/// sums `S1 = Σ w·t`, `S2 = Σ w·t²` are kept in registers over its rows, and added to
/// chunk-wide compensated sums. The shift of a class stays fixed for the chunk (its first
/// positive-weight row, moved to the mean of its rows in that block by [`centre_shift`]), so
/// the one-pass guard ([`finish_group`]) is applied once, to the chunk. Error of `m2`: about `u·(rows per class per block / 2 + blocks)·S2`, with
/// `S2 ≤ 16·m2` by the guard.
///
/// `Ok(None)` when the guard fails (a class whose first row lies more than about 4σ from its mean,
/// cancellation, a NaN/inf, overflow): the caller redoes the chunk with the block-wise path, which
/// moves each shift to the running mean and falls back to the exact two-pass per block.
fn chunk_bucketed<E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    rows: std::ops::Range<usize>,
    level: SimdLevel,
    scale: WeightScale<'_>,
) -> Result<Option<ClassStats>> {
    let d = input.x.ncols();
    let weighted = input.weights.is_some();
    let block = bucket_block_rows(d, std::mem::size_of::<E>(), input.n_classes);
    let mut scratch = BlockScratch::new(input.n_classes, d, block);
    scratch.sum_lo = AlignedBuf::zeros(input.n_classes * d);
    scratch.sq_dev_lo = AlignedBuf::zeros(input.n_classes * d);
    if weighted {
        scratch.iota = (0..block as u32).collect();
        scratch.global_lo = AlignedBuf::zeros(2 * d);
    }
    let mut probe = vec![0.0; 4 * d];
    let row_stride = input.x.strides()[0];
    // Only a C-contiguous chunk (rows back to back) is prefetched; other strides rely on the
    // hardware.
    let mut prefetch = if row_stride == d as isize {
        let first = input.x.as_ptr().wrapping_add(rows.start * d).cast::<u8>();
        Prefetcher::new(first, rows.len() * d * std::mem::size_of::<E>())
    } else {
        Prefetcher::new(std::ptr::null(), 0)
    };
    let mut start = rows.start;
    while start < rows.end {
        let end = (start + block).min(rows.end);
        let here = input.x.as_ptr().wrapping_add(start * d).cast::<u8>();
        // Window: this block and the next. (At d = 784 with C = 10 that is 2 MiB, more than
        // this Zen 4 core's 1 MiB L2; 64-row blocks that fit measured only ~5% faster there,
        // and smaller blocks were slower at C = 100.)
        prefetch.open_window(here, 2 * block * d * std::mem::size_of::<E>());
        bucket_block(input, start..end, &mut scratch, &mut prefetch, scale)?;
        let x_block = input.x.slice(ndarray::s![start..end, ..]);
        let mut view = BucketBlock {
            base: x_block.as_ptr(),
            row_stride,
            weights: &scratch.row_weights,
            prefetch: &mut prefetch,
        };
        for (bucket, (c, span)) in scratch.buckets.iter().enumerate() {
            let rows = &scratch.order[span.clone()];
            let table = c * d..(c + 1) * d;
            // SAFETY: the block's rows hold `d` contiguous f32/f64 values (checked by the
            // caller), `rows` index the block, the tables are C × d.
            unsafe {
                if scratch.fresh[bucket] {
                    let k = scratch.shift[table.clone()].as_mut_ptr();
                    let w = scratch.weight[*c];
                    centre_shift(&mut view, d, rows, w, k, &mut probe, level);
                }
                let tables = SumTables {
                    k: scratch.shift[table.clone()].as_ptr(),
                    s1: scratch.sum[table.clone()].as_mut_ptr(),
                    s1_lo: scratch.sum_lo[table.clone()].as_mut_ptr(),
                    s2: scratch.sq_dev[table.clone()].as_mut_ptr(),
                    s2_lo: scratch.sq_dev_lo[table].as_mut_ptr(),
                };
                dispatch_bucket_rows(&mut view, d, rows, tables, level);
            }
        }
        if weighted {
            let rows = &scratch.iota[..end - start];
            view.weights = &[];
            // SAFETY: as above; the global tables hold d values each.
            unsafe {
                if scratch.fresh_global {
                    let k = scratch.global_shift.as_mut_ptr();
                    let w = rows.len() as f64;
                    centre_shift(&mut view, d, rows, w, k, &mut probe, level);
                }
                let tables = SumTables {
                    k: scratch.global_shift.as_ptr(),
                    s1: scratch.global_sum.as_mut_ptr(),
                    s1_lo: scratch.global_lo[..d].as_mut_ptr(),
                    s2: scratch.global_sq_dev.as_mut_ptr(),
                    s2_lo: scratch.global_lo[d..].as_mut_ptr(),
                };
                dispatch_bucket_rows(&mut view, d, rows, tables, level);
            }
        }
        start = end;
    }
    Ok(finish_chunk_sums(&mut scratch, d, rows.len(), weighted))
}

/// Turn a chunk's compensated shifted sums (`sum + sum_lo`, `sq_dev + sq_dev_lo`, and the
/// global ones when weighted) into its statistics, applying the one-pass guard once to the
/// whole chunk; `None` when the guard fails or a value is not finite.
fn finish_chunk_sums(
    scratch: &mut BlockScratch,
    d: usize,
    rows: usize,
    weighted: bool,
) -> Option<ClassStats> {
    for (hi, lo) in scratch.sum.iter_mut().zip(&scratch.sum_lo) {
        *hi += lo;
    }
    for (hi, lo) in scratch.sq_dev.iter_mut().zip(&scratch.sq_dev_lo) {
        *hi += lo;
    }
    if weighted {
        let (lo1, lo2) = scratch.global_lo.split_at(d);
        for (hi, lo) in scratch.global_sum.iter_mut().zip(lo1) {
            *hi += lo;
        }
        for (hi, lo) in scratch.global_sq_dev.iter_mut().zip(lo2) {
            *hi += lo;
        }
    }
    let mut stats = ClassStats {
        classes: Moments::zeros(scratch.n_classes, d),
        global: Moments::zeros(1, d),
    };
    if !finish_onepass(&stats, scratch, d, rows, weighted) {
        return None;
    }
    merge_block(&mut stats, scratch, rows, weighted);
    fold_merged_weights(&mut stats, scratch);
    if !stats.classes.all_finite() || !stats.global.all_finite() {
        return None;
    }
    Some(stats)
}

// ------------------------------------------------------------------------------------------
// Streamed one-pass chunk kernel (few classes × features)

/// Largest per-chunk table of the streamed path (a shift and two window sums per class and
/// feature): it must stay in L1 next to the rows being read.
const STREAM_TABLE_BYTES: usize = 24 * 1024;

/// Rows a class adds into its window sums before they go, with TwoSum, to the chunk sums: the
/// rounding error of `S1`/`S2` stays about `34·u·Σ|terms|`, as in the bucketed path.
const STREAM_FLUSH_ROWS: u32 = 32;

/// How far ahead of the row being read the streamed path prefetches X into L2. With no software
/// prefetch the hardware prefetcher alone fell behind the kernel's table updates (1e6×32×10
/// f64: 1.3× a bare streaming loop); 8–16 KiB ahead with PREFETCHT1 reached 1.05–1.1×, while 1–2
/// KiB ahead, or PREFETCHT0, was slower than none.
const STREAM_PREFETCH_BYTES: usize = 16 * 1024;

/// Most classes the streamed path takes (its table must stay in L1, and a class first seen
/// after a chunk's first rows scans [`centre_rows`] labels).
const STREAM_MAX_CLASSES: usize = 64;

/// Rows at the start of a chunk (and after a class's late first sighting) whose class means
/// centre the shifts of the streamed and register-resident paths.
///
/// A shift off by `δ` from a class's mean passes the chunk guard while `n_c·δ² ≲ 15·m2`. With
/// an outlier `O` as the class's first row and `L` of its rows in the window, `δ ≈ O/L` and
/// `m2 ≳ O²`, so the guard holds while `n_c ≤ 15·L²`: with `n_c ≈ rows/C`, `L·C =
/// 2·√(rows·C/15)` rows leave a factor 4. Rare classes have fewer rows in the window, so it is
/// also at least 256 KiB of X, like the bucketed path's first block (a fixed 256-row window
/// failed every chunk of 2^20 × 2 rows with one class whose first row was 3e4 σ out; 1400 rows
/// failed a class with 0.15% of the rows). The window is read twice (it is in cache the second
/// time): about 1.5% of a chunk at d = 32.
fn centre_rows(chunk_rows: usize, n_classes: usize, row_bytes: usize) -> usize {
    let balanced = 2.0 * (chunk_rows as f64 * n_classes.max(1) as f64 / 15.0).sqrt();
    let block = (256 * 1024) / row_bytes.max(1);
    (balanced as usize).max(block).clamp(256, 1 << 16)
}

/// Widest float32 rows the streamed path takes.
const STREAM_MAX_F32_FEATURES: usize = 32;

/// Whether the streamed path takes an unweighted fit of `n_classes × d` with `elem_bytes`-byte
/// values: its table fits L1, and for float32, `d ≤ 32`. float32 rows are half the bytes, so
/// beyond 32 features the bucketed path's register sums (fewer table operations per value)
/// win over the streamed path's steadier reads: 5e5×64×16 f32 took 8.8 ms bucketed against
/// 11.2 streamed, 2.5e5×128×8 8.3 against 10.5 (float64: 17.6–18.5 against 15.1–15.7, and
/// 17.2–17.6 against 15.8–17.6).
fn streamed_fits(n_classes: usize, d: usize, weighted: bool, elem_bytes: usize) -> bool {
    !weighted
        && n_classes <= STREAM_MAX_CLASSES
        && n_classes.saturating_mul((3 * d).next_multiple_of(8) * 8) <= STREAM_TABLE_BYTES
        && (elem_bytes == 8 || d <= STREAM_MAX_F32_FEATURES)
}

/// Layout of the streamed path's table for vectors of `lanes` f64: per class, `vectors` groups
/// of `[K | W1 | W2]` (`lanes` values each: the shift, and the window sums of `t` and `t²`),
/// then `tail` scalar triples for the last `d mod lanes` features, padded to a cache line. A
/// row's update then touches one contiguous, aligned stretch of the table.
#[derive(Clone, Copy)]
struct StreamLayout {
    lanes: usize,
    vectors: usize,
    tail: usize,
    class_stride: usize,
}

impl StreamLayout {
    fn new(d: usize, lanes: usize) -> Self {
        let vectors = d / lanes;
        let tail = d - vectors * lanes;
        StreamLayout {
            lanes,
            vectors,
            tail,
            class_stride: (vectors * 3 * lanes + 3 * tail).next_multiple_of(8),
        }
    }

    /// Offset of feature `j`'s shift within its class's part of the table.
    fn shift_at(&self, j: usize) -> usize {
        let v = j / self.lanes;
        if v < self.vectors {
            v * 3 * self.lanes + j % self.lanes
        } else {
            self.vectors * 3 * self.lanes + 3 * (j - self.vectors * self.lanes)
        }
    }
}

/// Add class `c`'s window sums to the chunk sums (TwoSum) and zero them.
///
/// # Safety
/// `table` is class `c`'s part of the streamed table (layout `lay` for the lanes of `V`), the
/// scratch sums are C × d with `c < n_classes`, and the CPU supports `V`.
#[inline(always)]
unsafe fn flush_stream_class<V: Lanes>(
    table: *mut f64,
    lay: StreamLayout,
    scratch: &mut BlockScratch,
    c: usize,
    d: usize,
) {
    // SAFETY: the caller's contract; every offset stays inside the class's part of the table
    // and the class's `d` values of each scratch table.
    unsafe {
        let s1 = scratch.sum.as_mut_ptr().add(c * d);
        let s1_lo = scratch.sum_lo.as_mut_ptr().add(c * d);
        let s2 = scratch.sq_dev.as_mut_ptr().add(c * d);
        let s2_lo = scratch.sq_dev_lo.as_mut_ptr().add(c * d);
        let zero = V::splat(0.0);
        for v in 0..lay.vectors {
            let (a, j) = (table.add(v * 3 * V::LANES), v * V::LANES);
            add_compensated::<V>(s1.add(j), s1_lo.add(j), V::load(a.add(V::LANES)));
            add_compensated::<V>(s2.add(j), s2_lo.add(j), V::load(a.add(2 * V::LANES)));
            V::store(a.add(V::LANES), zero);
            V::store(a.add(2 * V::LANES), zero);
        }
        let tail = table.add(lay.vectors * 3 * V::LANES);
        for t in 0..lay.tail {
            let (a, j) = (tail.add(3 * t), lay.vectors * V::LANES + t);
            add_compensated::<ScalarLanes>(s1.add(j), s1_lo.add(j), *a.add(1));
            add_compensated::<ScalarLanes>(s2.add(j), s2_lo.add(j), *a.add(2));
            *a.add(1) = 0.0;
            *a.add(2) = 0.0;
        }
    }
}

/// Centred shifts of the classes present among rows `start..end`: each one's first row there,
/// moved to the mean of its rows there (`None` for a class absent). Checks the labels it reads.
fn centred_shifts<E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    start: usize,
    end: usize,
) -> Result<Vec<Option<Vec<f64>>>> {
    let d = input.x.ncols();
    let mut first: Vec<Option<Vec<f64>>> = vec![None; input.n_classes];
    let mut sums = vec![0.0; input.n_classes * d];
    let mut count = vec![0usize; input.n_classes];
    for r in start..end {
        let c = class_code(input, r)?;
        let row = input.x.row(r);
        let k = first[c].get_or_insert_with(|| row.iter().map(|v| v.to_f64()).collect());
        let sum = &mut sums[c * d..(c + 1) * d];
        // Rows have contiguous features on these paths; slices keep this loop vectorised (it
        // reads 256 KiB per chunk, which through ndarray's iterators cost several % of a fit).
        if let Some(values) = row.as_slice() {
            for ((s, v), k) in sum.iter_mut().zip(values).zip(k.iter()) {
                *s += v.to_f64() - k;
            }
        } else {
            for ((s, v), k) in sum.iter_mut().zip(row).zip(k.iter()) {
                *s += v.to_f64() - k;
            }
        }
        count[c] += 1;
    }
    for (c, shift) in first.iter_mut().enumerate() {
        if let Some(k) = shift {
            for (k, s) in k.iter_mut().zip(&sums[c * d..(c + 1) * d]) {
                let centred = *k + s / count[c] as f64;
                if centred.is_finite() {
                    *k = centred;
                }
            }
        }
    }
    Ok(first)
}

/// [`centred_shifts`] of the chunk's first [`centre_rows`] rows, set in `scratch`; returned per
/// class (`None` for a class not among them) for the caller's own layout.
fn centre_chunk_start<E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    rows: &std::ops::Range<usize>,
    scratch: &mut BlockScratch,
) -> Result<Vec<Option<Vec<f64>>>> {
    let row_bytes = input.x.ncols() * std::mem::size_of::<E>();
    let window = centre_rows(rows.len(), input.n_classes, row_bytes);
    let shifts = centred_shifts(input, rows.start, rows.end.min(rows.start + window))?;
    for (c, k) in shifts.iter().enumerate() {
        if let Some(k) = k {
            scratch.set_shift(c, k);
        }
    }
    Ok(shifts)
}

/// The centred shift of class `c`, first seen at `row` (after the chunk's first rows): its first
/// row moved to the mean of its next `2·√(rows left/15)` rows (at least 16), found within
/// [`centre_rows`] rows. That many rows keep the guard's margin of [`centre_rows`] whatever
/// the class's share of the rest of the chunk, and sorted labels (a class's rows together) stop
/// the scan early: a scan of the whole window per class doubled the time of a chunk of 2^21
/// sorted labels with 64 classes. Checks the labels it reads.
fn centred_shift<E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    row: usize,
    end: usize,
    c: usize,
) -> Result<Vec<f64>> {
    let row_bytes = input.x.ncols() * std::mem::size_of::<E>();
    let look = end.min(row + centre_rows(end - row, input.n_classes, row_bytes));
    let needed = ((2.0 * ((end - row) as f64 / 15.0).sqrt()) as usize).max(16);
    let first: Vec<f64> = input.x.row(row).iter().map(|v| v.to_f64()).collect();
    let mut sums = vec![0.0; first.len()];
    let mut count = 0usize;
    for r in row..look {
        if class_code(input, r)? == c {
            for ((s, v), k) in sums.iter_mut().zip(input.x.row(r)).zip(&first) {
                *s += v.to_f64() - k;
            }
            count += 1;
            if count == needed {
                break;
            }
        }
    }
    Ok(first
        .iter()
        .zip(&sums)
        .map(|(k, s)| {
            let centred = k + s / count as f64;
            if centred.is_finite() { centred } else { *k }
        })
        .collect())
}

/// Give class `c`, first seen at `row`, its [`centred_shift`] in the streamed table, and mark
/// it as seen.
///
/// # Safety
/// `table` is class `c`'s part of the streamed table with layout `lay`.
unsafe fn centre_stream_shift<E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    row: usize,
    end: usize,
    c: usize,
    table: *mut f64,
    lay: StreamLayout,
    scratch: &mut BlockScratch,
) -> Result<()> {
    let k = centred_shift(input, row, end, c)?;
    for (j, &v) in k.iter().enumerate() {
        // SAFETY: `shift_at(j)` lies inside the class's part of the table (caller's contract).
        unsafe { *table.add(lay.shift_at(j)) = v };
    }
    scratch.set_shift(c, &k);
    Ok(())
}

/// The streamed path's pass over a chunk at the level of `V`: row by row in memory order,
/// `t = x − K_c` is added to its class's window sums (`W1 += t`, `W2 += t²`) in an L1-resident
/// table, and every [`STREAM_FLUSH_ROWS`] rows of a class its windows go to the chunk sums.
///
/// # Safety
/// Rows of `input.x` hold contiguous f32/f64 values; `scratch.sum_lo`/`sq_dev_lo` are C × d;
/// the CPU supports `V`.
#[inline(always)]
unsafe fn stream_chunk_body<V: Lanes, E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    rows: std::ops::Range<usize>,
    scratch: &mut BlockScratch,
) -> Result<()> {
    let (d, n_classes) = (input.x.ncols(), input.n_classes);
    let lay = StreamLayout::new(d, V::LANES);
    let mut table = AlignedBuf::zeros(n_classes * lay.class_stride);
    // Rows in each class's window; a class without a shift starts "full", so that one check
    // per row catches both a window to flush and a class seen for the first time.
    let mut window = vec![STREAM_FLUSH_ROWS; n_classes];
    // Shifts of the classes in the chunk's first rows, centred on their means there.
    for (c, shift) in centre_chunk_start(input, &rows, scratch)?
        .iter()
        .enumerate()
    {
        if let Some(k) = shift {
            for (j, &v) in k.iter().enumerate() {
                table[c * lay.class_stride + lay.shift_at(j)] = v;
            }
            window[c] = 0;
        }
    }
    let x = input.x.as_ptr();
    let row_stride = input.x.strides()[0];
    let (labels, label_stride) = (input.labels.as_ptr(), input.labels.strides()[0]);
    let vec_end = lay.vectors * V::LANES;
    let tab = table.as_mut_ptr();
    let row_bytes = d * std::mem::size_of::<E>();
    // Only rows back to back are prefetched (strided rows would fetch the gaps too).
    let mut prefetch = if row_stride == d as isize {
        let start = x.wrapping_add(rows.start * d).cast::<u8>();
        let mut p = Prefetcher::new(start, rows.len() * row_bytes);
        p.open_window(start, rows.len() * row_bytes);
        p
    } else {
        Prefetcher::new(std::ptr::null(), 0)
    };
    // SAFETY: rows are in `input`; `c < n_classes` is checked before any table access, and
    // every offset stays inside class `c`'s `class_stride` values.
    unsafe {
        for row in rows.clone() {
            // Everything up to STREAM_PREFETCH_BYTES past this row's end.
            prefetch.advance_to(
                x.wrapping_add((row + 1) * d)
                    .cast::<u8>()
                    .wrapping_add(STREAM_PREFETCH_BYTES),
            );
            let label = (*labels.offset(row as isize * label_stride)).to_i64();
            // One unsigned comparison also rejects negative labels.
            if label as u64 >= n_classes as u64 {
                return Err(GaussError::LabelOutOfRange {
                    row,
                    label,
                    n_classes,
                });
            }
            let c = label as usize;
            let t = tab.add(c * lay.class_stride);
            let w = window.get_unchecked_mut(c);
            if *w == STREAM_FLUSH_ROWS {
                if scratch.has_shift[c] {
                    scratch.weight[c] += f64::from(STREAM_FLUSH_ROWS);
                    flush_stream_class::<V>(t, lay, scratch, c, d);
                } else {
                    centre_stream_shift(input, row, rows.end, c, t, lay, scratch)?;
                }
                *w = 0;
            }
            *w += 1;
            let xr = x.offset(row as isize * row_stride);
            for v in 0..lay.vectors {
                let a = t.add(v * 3 * V::LANES);
                let tv = V::sub(load_widened::<V, E>(xr.add(v * V::LANES)), V::load(a));
                let (w1, w2) = (a.add(V::LANES), a.add(2 * V::LANES));
                V::store(w1, V::add(V::load(w1), tv));
                V::store(w2, V::fmadd(tv, tv, V::load(w2)));
            }
            let tail = t.add(lay.vectors * 3 * V::LANES);
            for j in 0..lay.tail {
                let a = tail.add(3 * j);
                let tv = (*xr.add(vec_end + j)).to_f64() - *a;
                *a.add(1) += tv;
                // Unfused, as the scalar level and the bucketed path's tails.
                *a.add(2) += tv * tv;
            }
        }
        for (c, &rest) in window.iter().enumerate() {
            if scratch.has_shift[c] {
                let t = tab.add(c * lay.class_stride);
                scratch.weight[c] += f64::from(rest);
                // (`scratch.shift` already holds the shift: `set_shift`.)
                flush_stream_class::<V>(t, lay, scratch, c, d);
            }
        }
    }
    Ok(())
}

/// Fast path of [`chunk_stats`] for unweighted fits of f32/f64 rows with contiguous features
/// whose per-class table is small ([`streamed_fits`]): X is read once, in memory order, with a
/// software prefetch [`STREAM_PREFETCH_BYTES`] ahead, and each row updates its class's window
/// sums in L1. Unlike the bucketed path there is no label pass and no class-order gather, so
/// the reads stream at close to the memory bandwidth. Same numerics as the bucketed path:
/// compensated chunk sums, one guard per chunk; `Ok(None)` when it fails, and the caller redoes
/// the chunk with the block-wise path.
fn chunk_streamed<E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    rows: std::ops::Range<usize>,
    level: SimdLevel,
) -> Result<Option<ClassStats>> {
    let d = input.x.ncols();
    let mut scratch = BlockScratch::new(input.n_classes, d, 1);
    scratch.sum_lo = AlignedBuf::zeros(input.n_classes * d);
    scratch.sq_dev_lo = AlignedBuf::zeros(input.n_classes * d);
    type Range = std::ops::Range<usize>;
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<E: Element, L: Label>(
        i: FitInput<'_, E, L>,
        r: Range,
        s: &mut BlockScratch,
    ) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { stream_chunk_body::<Avx2Lanes, E, L>(i, r, s) }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
    unsafe fn avx512<E: Element, L: Label>(
        i: FitInput<'_, E, L>,
        r: Range,
        s: &mut BlockScratch,
    ) -> Result<()> {
        // 256-bit vectors even here: 512-bit table updates measured no faster (the loop is
        // bound by its table loads and stores), and 4 lanes leave shorter scalar tails (4 × 16
        // classes: 7.6 ms against 10.6 with 8 lanes, where all 4 features were a scalar tail).
        // SAFETY: forwarded from the caller (AVX-512 implies AVX2 and FMA).
        unsafe { stream_chunk_body::<Avx2Lanes, E, L>(i, r, s) }
    }
    let r = rows.clone();
    // SAFETY (all arms): the caller checked contiguous f32/f64 features, the scratch sums are
    // C × d, and simd_dispatch! runs each AVX arm only on a CPU with its features.
    simd_dispatch!(
        level,
        unsafe { stream_chunk_body::<ScalarLanes, E, L>(input, r, &mut scratch) },
        unsafe { avx2(input, r, &mut scratch) },
        unsafe { avx512(input, r, &mut scratch) }
    )?;
    Ok(finish_chunk_sums(&mut scratch, d, rows.len(), false))
}

// ------------------------------------------------------------------------------------------
// Register-resident chunk kernel (AVX-512, tiny d, few classes)

/// Most classes of the register-resident path: each class holds three AVX-512 registers
/// (shift pattern and two window sums).
const TINY_MAX_CLASSES: usize = 8;

/// Whether the register-resident path takes this fit: unweighted, `d` of 1, 2 or 4 (so one
/// AVX-512 vector holds `8/d` whole rows), `d·C ≤ 16`, rows back to back, contiguous labels,
/// and the AVX-512 level. Every vector is added once per class, so more classes or wider rows
/// are faster on the streamed path (1e6×8×8: 15 ms here against 6 ms streamed; 2e6×2×8: 7.8
/// against 10; 2e6×2×2: 2.5 against 7.5; 2e6×4×3: 6.3 against 14 on the AVX-512 level, where
/// the streamed path handles 4 features as a scalar tail, and 7.35 on the AVX2 level).
fn tiny_fits<E: Element, L: Label>(input: FitInput<'_, E, L>, level: SimdLevel) -> bool {
    let d = input.x.ncols();
    input.weights.is_none()
        && matches!(d, 1 | 2 | 4)
        && d * input.n_classes <= 16
        && input.x.strides()[0] == d as isize
        && input.x.strides()[1] == 1
        && (input.labels.strides()[0] == 1 || input.labels.len() <= 1)
        && input.n_classes <= TINY_MAX_CLASSES
        && level == SimdLevel::Avx512
        && crate::simd::cpu_level() >= SimdLevel::Avx512
        && has_popcnt()
}

/// Whether the CPU has POPCNT (every AVX-512 CPU does; checked all the same).
fn has_popcnt() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("popcnt");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Fast path of [`chunk_stats`] for tiny `d` ([`tiny_fits`]): the streamed path spends a dozen
/// cycles a row on bookkeeping when a row is 8–64 bytes, so here one AVX-512 vector holds `8/d`
/// consecutive rows, every class keeps its shift and window sums in registers, and each vector
/// is added to every class under that class's lane mask. Windows of 32 vectors go to per-lane
/// compensated sums, which are folded into per-feature sums (TwoSum) at the end of the chunk.
/// Same guard and fallback as the other one-pass paths (`Ok(None)`: redo the chunk).
fn chunk_tiny<E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    rows: std::ops::Range<usize>,
) -> Result<Option<ClassStats>> {
    let d = input.x.ncols();
    let mut scratch = BlockScratch::new(input.n_classes, d, 1);
    scratch.sum_lo = AlignedBuf::zeros(input.n_classes * d);
    scratch.sq_dev_lo = AlignedBuf::zeros(input.n_classes * d);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `tiny_fits` checked the layout and that the CPU has AVX-512.
    unsafe {
        // Loops over a constant class count keep every class's registers in registers.
        match input.n_classes {
            0..=2 => tiny_chunk_avx512::<E, L, 2>(input, rows.clone(), &mut scratch)?,
            3..=4 => tiny_chunk_avx512::<E, L, 4>(input, rows.clone(), &mut scratch)?,
            _ => tiny_chunk_avx512::<E, L, TINY_MAX_CLASSES>(input, rows.clone(), &mut scratch)?,
        }
    }
    Ok(finish_chunk_sums(&mut scratch, d, rows.len(), false))
}

/// The register-resident pass (see [`chunk_tiny`]) for at most `CMAX` classes (classes from
/// `n_classes` on never match a label, so they add nothing). Lane `l` of a vector is feature
/// `l mod d` of row `l / d`.
///
/// # Safety
/// As [`tiny_fits`]; `scratch.sum_lo`/`sq_dev_lo` are C × d.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,popcnt")]
unsafe fn tiny_chunk_avx512<E: Element, L: Label, const CMAX: usize>(
    input: FitInput<'_, E, L>,
    rows: std::ops::Range<usize>,
    scratch: &mut BlockScratch,
) -> Result<()> {
    use std::arch::x86_64::*;
    const LANES: usize = 8;
    let (d, n_classes) = (input.x.ncols(), input.n_classes);
    let per_vec = LANES / d;
    let x = input.x.as_ptr();
    let labels = input.labels.as_ptr();
    let is_f32 = TypeId::of::<E>() == TypeId::of::<f32>();
    // SAFETY (whole body): rows in `rows` are readable (`d` values each, back to back); lanes
    // past the chunk's last row are never loaded (masked loads suppress faults); class indices
    // are checked against n_classes before use.
    unsafe {
        // Lane l reads the label of row l / d.
        let spread = _mm512_set_epi64(
            (7 / d) as i64,
            (6 / d) as i64,
            (5 / d) as i64,
            (4 / d) as i64,
            (3 / d) as i64,
            (2 / d) as i64,
            (1 / d) as i64,
            0,
        );
        let zero = _mm512_setzero_pd();
        // Shift patterns stay in memory (one L1 load per class and vector): set with a runtime
        // class index, as registers they would drag the sums out of registers too.
        let mut shift = [[0.0f64; LANES]; CMAX];
        // Per-lane compensated chunk sums: [class][hi1, lo1, hi2, lo2] × LANES.
        let mut lane_sums = vec![0.0f64; CMAX * 4 * LANES];
        let mut count = [0u64; CMAX];
        let mut pending: u32 = (1u32 << n_classes) - 1; // classes without a shift
        for (c, k) in centre_chunk_start(input, &rows, scratch)?
            .iter()
            .enumerate()
        {
            if let Some(k) = k {
                for (l, p) in shift[c].iter_mut().enumerate() {
                    *p = k[l % d];
                }
                pending &= !(1 << c);
            }
        }
        let is_i64 = TypeId::of::<L>() == TypeId::of::<i64>();
        let limit = _mm512_set1_epi64(n_classes as i64);
        let mut row = rows.start;
        while row < rows.end {
            // Up to one window of vectors with the sums in registers. The loop holds no call
            // (zmm registers do not survive one), so it stops before a vector with a class that
            // still needs its shift, and that class gets it below.
            let mut acc1 = [zero; CMAX];
            let mut acc2 = [zero; CMAX];
            let mut needs_shift = false;
            for _ in 0..STREAM_FLUSH_ROWS {
                if row >= rows.end {
                    break;
                }
                let here = per_vec.min(rows.end - row);
                let valid: __mmask8 = if here == per_vec {
                    0xff
                } else {
                    ((1u32 << (here * d)) - 1) as __mmask8
                };
                // The labels, loaded as a vector (scalar stores then a vector load would stall
                // on store forwarding), checked, and spread to their rows' lanes.
                let in_rows = ((1u32 << here) - 1) as __mmask8;
                let lab = if is_i64 {
                    _mm512_maskz_loadu_epi64(in_rows, labels.add(row).cast::<i64>())
                } else {
                    let narrow = _mm256_maskz_loadu_epi32(in_rows, labels.add(row).cast::<i32>());
                    _mm512_cvtepi32_epi64(narrow)
                };
                let bad = _mm512_mask_cmpge_epu64_mask(in_rows, lab, limit);
                if bad != 0 {
                    let k = bad.trailing_zeros() as usize;
                    return Err(GaussError::LabelOutOfRange {
                        row: row + k,
                        label: (*labels.add(row + k)).to_i64(),
                        n_classes,
                    });
                }
                let lane_labels = _mm512_permutexvar_epi64(spread, lab);
                let mut masks = [0 as __mmask8; CMAX];
                let mut present: u32 = 0;
                for (c, mask) in masks.iter_mut().enumerate() {
                    let class = _mm512_set1_epi64(c as i64);
                    *mask = _mm512_mask_cmpeq_epi64_mask(valid, lane_labels, class);
                    present |= u32::from(*mask != 0) << c;
                }
                if present & pending != 0 {
                    needs_shift = true;
                    break;
                }
                let p = x.add(row * d);
                let xv = if is_f32 {
                    _mm512_cvtps_pd(_mm256_maskz_loadu_ps(valid, p.cast::<f32>()))
                } else {
                    _mm512_maskz_loadu_pd(valid, p.cast::<f64>())
                };
                for (c, &mask) in masks.iter().enumerate() {
                    let t = _mm512_sub_pd(xv, _mm512_loadu_pd(shift[c].as_ptr()));
                    acc1[c] = _mm512_mask_add_pd(acc1[c], mask, acc1[c], t);
                    acc2[c] = _mm512_mask3_fmadd_pd(t, t, acc2[c], mask);
                    count[c] += u64::from(mask.count_ones());
                }
                row += here;
            }
            for c in 0..CMAX {
                let base = lane_sums.as_mut_ptr().add(c * 4 * LANES);
                add_compensated::<Avx512Lanes>(base, base.add(LANES), acc1[c]);
                add_compensated::<Avx512Lanes>(base.add(2 * LANES), base.add(3 * LANES), acc2[c]);
            }
            if needs_shift {
                // The vector at `row`: its labels are valid; shift its new classes (first row
                // of each) and go on from the same vector.
                for k in 0..per_vec.min(rows.end - row) {
                    let c = (*labels.add(row + k)).to_i64() as usize;
                    if pending & (1 << c) != 0 {
                        let k_values = centred_shift(input, row + k, rows.end, c)?;
                        for (l, p) in shift[c].iter_mut().enumerate() {
                            *p = k_values[l % d];
                        }
                        scratch.set_shift(c, &k_values);
                        pending &= !(1 << c);
                    }
                }
            }
        }
        // Fold the lanes of each feature (rows l / d) into the chunk sums, with TwoSum.
        for c in 0..n_classes {
            scratch.weight[c] = (count[c] / d as u64) as f64;
            let base = &lane_sums[c * 4 * LANES..(c + 1) * 4 * LANES];
            for j in 0..d {
                for (part, (hi_out, lo_out)) in [
                    (0, (&mut scratch.sum, &mut scratch.sum_lo)),
                    (2, (&mut scratch.sq_dev, &mut scratch.sq_dev_lo)),
                ] {
                    let (hi, lo) = (&base[part * LANES..], &base[(part + 1) * LANES..]);
                    let (mut s, mut err) = (0.0f64, 0.0f64);
                    for l in (j..LANES).step_by(d) {
                        let t = s + hi[l];
                        let bb = t - s;
                        err += (s - (t - bb)) + (hi[l] - bb) + lo[l];
                        s = t;
                    }
                    hi_out[c * d + j] = s;
                    lo_out[c * d + j] = err;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod onepass_tests {
    use super::*;
    use crate::simd::available_levels;
    use ndarray::Array2;

    fn stats(x: &[f64], d: usize, y: &[i64], w: Option<&[f64]>, level: SimdLevel) -> ClassStats {
        let n = y.len();
        let input = FitInput {
            x: ArrayView2::from_shape((n, d), x).unwrap(),
            labels: ArrayView1::from(y),
            weights: w.map(ArrayView1::from),
            n_classes: 1,
        };
        class_stats(input, 1, level).unwrap()
    }

    #[test]
    fn guard_sends_a_mean_near_zero_far_from_the_shift_to_the_two_pass() {
        // Shift = 0.001 (first row); the mean 0.001/10002 cancels K + D by a factor 1e4.
        let exact_mean: f64 = 0.001 / 10002.0;
        let exact_var =
            (1.0 * (0.001 - exact_mean).powi(2) + 10001.0 * exact_mean.powi(2)) / 10002.0;
        for level in available_levels() {
            let s = stats(
                &[0.001, 0.0, 0.0],
                1,
                &[0, 0, 0],
                Some(&[1.0, 1e4, 1.0]),
                level,
            );
            let m = s.classes.mean[0];
            assert!(
                ((m - exact_mean) / exact_mean).abs() < 1e-12,
                "{level:?} mean {m}"
            );
            let v = s.classes.m2[0] / s.classes.weight[0];
            assert!(
                ((v - exact_var) / exact_var).abs() < 1e-12,
                "{level:?} var {v}"
            );
        }
    }

    #[test]
    fn zero_weight_outlier_is_never_the_shift() {
        for level in available_levels() {
            let s = stats(
                &[1e12, 1.0, 2.0, 4.0],
                1,
                &[0, 0, 0, 0],
                Some(&[0.0, 1.0, 1.0, 1.0]),
                level,
            );
            assert_eq!(s.classes.mean[0], 7.0 / 3.0, "{level:?}");
            let v = s.classes.m2[0] / s.classes.weight[0];
            assert!((v - 14.0 / 9.0).abs() < 1e-15, "{level:?} var {v}");
        }
    }

    #[test]
    fn one_pass_matches_two_pass_on_offset_data_every_layout() {
        // Offset 1e9, blocks where some classes have one row (m2_b = 0): the guard must accept
        // them through the merge term and the result must equal an exact reference closely.
        let (n, d, c) = (20_000, 37, 50);
        let mut state = 1u64;
        let mut unit = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let x = Array2::from_shape_fn((n, d), |_| 1e9 + unit());
        let y: Vec<i64> = (0..n).map(|i| ((i * 7919) % c) as i64).collect();
        for level in available_levels() {
            for view in [x.view(), x.t().as_standard_layout().reversed_axes().view()] {
                let input = FitInput {
                    x: view,
                    labels: ArrayView1::from(&y[..]),
                    weights: None,
                    n_classes: c,
                };
                let s = class_stats(input, 1, level).unwrap();
                for class in [0usize, 17, 49] {
                    for j in [0usize, 8, 36] {
                        let rows: Vec<f64> = (0..n)
                            .filter(|&i| y[i] == class as i64)
                            .map(|i| x[[i, j]] - 1e9)
                            .collect();
                        let m = rows.iter().sum::<f64>() / rows.len() as f64;
                        let v =
                            rows.iter().map(|r| (r - m) * (r - m)).sum::<f64>() / rows.len() as f64;
                        let got_m =
                            s.classes.mean[class * d + j] - 1e9 + s.classes.mean_lo[class * d + j];
                        let got_v = s.classes.m2[class * d + j] / s.classes.weight[class];
                        // x − 1e9 is exact, so the reference is good to ~1e-16 · |x − 1e9|.
                        assert!((got_m - m).abs() < 1e-9, "{level:?} mean {got_m} vs {m}");
                        assert!(
                            ((got_v - v) / v).abs() < 1e-12,
                            "{level:?} var {got_v} vs {v}"
                        );
                    }
                }
            }
        }
    }
}
