//! Per-class sufficient statistics (weight, mean, sum of squared deviations) in one pass.
//!
//! Algorithm (ALGORITHMS.md §1): rows are taken in cache-sized blocks. Inside a block an exact
//! two-pass computes each class's block mean (one reciprocal per class, no division per
//! element) and its sum of squared deviations from that mean; the block is then merged into
//! the running totals with the weighted Chan/Schubert–Gertz formula ([`merge_group`]).
//! Relative error of the variance is about `u·(B + κ·log(n/B))` for block size `B` and
//! `κ = |mean|/σ`, instead of the textbook `n·κ²·u`.
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
use crate::simd::{SimdLevel, madd};
use crate::simd_dispatch;
use crate::threads::run_in_pool;

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
        if let Some(w) = weight.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(GaussError::BadParameter {
                what: format!("statistics weight must be finite and >= 0; got {w}"),
            });
        }
        if mean
            .iter()
            .chain(&mean_lo)
            .chain(&m2)
            .any(|v| !v.is_finite())
            || m2.iter().any(|v| *v < 0.0)
        {
            return Err(GaussError::BadParameter {
                what: "statistics mean/m2 must be finite and m2 >= 0".to_string(),
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

    /// MLE variance (`m2 / weight`, ddof = 0); NaN where a group has zero weight.
    pub fn variance(&self) -> Vec<f64> {
        let d = self.n_features.max(1);
        (0..self.n_groups * self.n_features)
            .map(|k| self.m2[k] / self.weight[k / d])
            .collect()
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
        let d = self.n_features;
        for g in 0..self.n_groups {
            let span = g * d..(g + 1) * d;
            merge_group(
                GroupMut {
                    weight: &mut self.weight[g],
                    mean: &mut self.mean[span.clone()],
                    mean_lo: &mut self.mean_lo[span.clone()],
                    m2: &mut self.m2[span.clone()],
                },
                other.weight[g],
                &other.mean[span.clone()],
                &other.mean_lo[span.clone()],
                &other.m2[span],
            );
        }
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
/// `δ = m_b − M`, `M += δ·w_b/W'`, `S += S_b + δ²·W·w_b/W'`, with `δ` taken from the
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
    let cross = *a.weight * frac_b;
    for j in 0..a.mean.len() {
        let delta = (mean_b[j] - a.mean[j]) + (lo_b[j] - a.mean_lo[j]);
        a.m2[j] += m2_b[j] + delta * delta * cross;
        let (hi, lo) = two_sum(a.mean[j], a.mean_lo[j] + delta * frac_b);
        a.mean[j] = hi;
        a.mean_lo[j] = lo;
    }
    *a.weight = total;
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

/// Serial below this many elements: the pool hand-off costs more than it saves.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 17;

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
    let block = block_rows(d, input.n_classes);
    let chunk = chunk_rows(d, block);
    let n_chunks = n.div_ceil(chunk);
    let run_chunk = |k: usize| {
        let rows = k * chunk..((k + 1) * chunk).min(n);
        chunk_stats(input, rows, block, level)
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
    if input.weights.is_none() {
        // Unweighted: the global statistics are the pooled class statistics, exactly.
        global = classes.pooled();
    }
    if !classes.all_finite() || !global.all_finite() {
        return Err(GaussError::Overflow {
            what: "the sum of squared deviations".to_string(),
        });
    }
    Ok(ClassStats { classes, global })
}

/// Scratch space for one block, reused across the blocks of a chunk.
///
/// Every class has a shift `K_c` (its running mean's high part, or for a class new to the
/// chunk the first of its rows): the passes accumulate `x − K_c`, which is exact by Sterbenz's
/// lemma when `x` is near `K_c`, so a large common offset costs no precision.
struct BlockScratch {
    /// Per-class shift `K_c` (row-major C × d).
    shift: Vec<f64>,
    has_shift: Vec<bool>,
    /// Per-class weighted sums of `x − K`, then (after `finish_means`) their block means `D`.
    sum: Vec<f64>,
    /// Per-class weighted squared deviations from the block mean.
    sq_dev: Vec<f64>,
    /// Per-class weighted sums of deviations from the block mean (zero in exact arithmetic);
    /// the corrected two-pass algorithm (Chan, Golub & LeVeque 1983) adds them back.
    dev_sum: Vec<f64>,
    weight: Vec<f64>,
    seen: Vec<bool>,
    touched: Vec<usize>,
    /// The same for the unweighted global statistics (only when the fit is weighted).
    global_shift: Vec<f64>,
    global_has_shift: bool,
    global_sum: Vec<f64>,
    global_sq_dev: Vec<f64>,
    global_dev_sum: Vec<f64>,
    codes: Vec<usize>,
    row_weights: Vec<f64>,
    /// Row-major f64 copy of one block, for layouts without contiguous rows or columns.
    packed: Vec<f64>,
}

impl BlockScratch {
    fn new(n_classes: usize, d: usize, block: usize) -> Self {
        BlockScratch {
            shift: vec![0.0; n_classes * d],
            has_shift: vec![false; n_classes],
            sum: vec![0.0; n_classes * d],
            sq_dev: vec![0.0; n_classes * d],
            dev_sum: vec![0.0; n_classes * d],
            weight: vec![0.0; n_classes],
            seen: vec![false; n_classes],
            touched: Vec::with_capacity(n_classes.min(block)),
            global_shift: vec![0.0; d],
            global_has_shift: false,
            global_sum: vec![0.0; d],
            global_sq_dev: vec![0.0; d],
            global_dev_sum: vec![0.0; d],
            codes: Vec::with_capacity(block),
            row_weights: Vec::with_capacity(block),
            packed: Vec::new(),
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

fn chunk_stats<E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    rows: std::ops::Range<usize>,
    block: usize,
    level: SimdLevel,
) -> Result<ClassStats> {
    let d = input.x.ncols();
    let mut stats = ClassStats {
        classes: Moments::zeros(input.n_classes, d),
        global: Moments::zeros(1, d),
    };
    let mut scratch = BlockScratch::new(input.n_classes, d, block);
    let mut start = rows.start;
    while start < rows.end {
        let end = (start + block).min(rows.end);
        load_codes_and_weights(input, start..end, &mut scratch)?;
        let x_block = input.x.slice(ndarray::s![start..end, ..]);
        block_stats(x_block, input.weights.is_some(), &mut scratch, level);
        merge_block(
            &mut stats,
            &mut scratch,
            end - start,
            input.weights.is_some(),
        );
        start = end;
    }
    if (!stats.classes.all_finite() || !stats.global.all_finite())
        && let Some(err) = first_non_finite(input.x, rows)
    {
        return Err(err);
    }
    Ok(stats)
}

fn load_codes_and_weights<E: Element, L: Label>(
    input: FitInput<'_, E, L>,
    rows: std::ops::Range<usize>,
    scratch: &mut BlockScratch,
) -> Result<()> {
    scratch.codes.clear();
    scratch.row_weights.clear();
    for row in rows.clone() {
        let label = input.labels[row].to_i64();
        if label < 0 || label as u64 >= input.n_classes as u64 {
            return Err(GaussError::LabelOutOfRange {
                row,
                label,
                n_classes: input.n_classes,
            });
        }
        scratch.codes.push(label as usize);
    }
    if let Some(w) = input.weights {
        for row in rows {
            let value = w[row];
            if !(value.is_finite() && value >= 0.0) {
                return Err(GaussError::BadWeight { row, value });
            }
            scratch.row_weights.push(value);
        }
    }
    Ok(())
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
            scratch.weight[c] += if weighted {
                scratch.row_weights[i]
            } else {
                1.0
            };
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

/// Turn the per-class shifted sums of a block into block means: one reciprocal per class.
#[inline(always)]
fn finish_means(scratch: &mut BlockScratch, d: usize, rows: usize, weighted: bool) {
    for &c in &scratch.touched {
        let w = scratch.weight[c];
        if w > 0.0 {
            let inv = 1.0 / w;
            scratch.sum[c * d..(c + 1) * d]
                .iter_mut()
                .for_each(|s| *s *= inv);
        }
    }
    if weighted {
        let inv = 1.0 / rows as f64;
        scratch.global_sum.iter_mut().for_each(|s| *s *= inv);
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
            scratch.weight[c] += w;
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
        scratch.weight[c] += if weighted {
            scratch.row_weights[i]
        } else {
            1.0
        };
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
    let inv = 1.0 / weight;
    for (((k, s), q), e) in shift
        .iter_mut()
        .zip(sum.iter_mut())
        .zip(sq_dev)
        .zip(dev_sum)
    {
        let correction = *e * inv;
        *q = (*q - correction * *e).max(0.0);
        let (hi, lo) = two_sum(*k, *s);
        *k = hi;
        *s = lo + correction;
        *e = 0.0;
    }
}

/// Merge a finished block into the chunk totals, move each shift to the new running mean, and
/// reset the block's scratch. The block mean is `K + D + correction`, passed as a double-double.
fn merge_block(stats: &mut ClassStats, scratch: &mut BlockScratch, rows: usize, weighted: bool) {
    let d = stats.classes.n_features;
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
        scratch.seen[c] = false;
    }
    scratch.touched.clear();
    if weighted && rows > 0 {
        correct_block_group(
            rows as f64,
            &mut scratch.global_shift,
            &mut scratch.global_sum,
            &mut scratch.global_sq_dev,
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
            &scratch.global_sum,
            &scratch.global_sq_dev,
        );
        scratch.global_shift.copy_from_slice(&global.mean);
        scratch.global_sum.fill(0.0);
        scratch.global_sq_dev.fill(0.0);
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
