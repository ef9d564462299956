//! Property fuzzer for the gaussmle Rust core, on the stable toolchain (no libFuzzer).
//!
//! Every case is generated from one 64-bit seed, so any failure is replayed exactly with
//! `--replay SEED`. Each case picks a target (`class_stats`, `Moments::merge`/`from_parts`,
//! `Scorer::new` + `score_into`/`predict_into`, `encode_labels`), random shapes (0 and 1
//! included), random layouts (C, F, stepped, negative steps, stride-0 broadcasts), f32/f64,
//! i32/i64 labels, NaN/±inf/subnormal/±1e308 values, out-of-range labels, bad weights and
//! mismatched lengths, random thread counts and SIMD levels, and checks:
//!
//! * no panic (each case runs under `catch_unwind`; overflow checks and debug assertions are on);
//! * every error is a `GaussError` that is justified by the input (the named row/column/label/
//!   weight really is bad, an `Overflow` only when the exact statistics are near float64's max);
//! * every `Ok` result is finite and matches a simple scalar reference (power-of-two-scaled,
//!   compensated two-pass statistics; subtract-first scoring) within a tolerance.
//!
//! Usage: `fuzz_core [--seconds S] [--seed N] [--corpus FILE] [--replay SEED]... [--keep-going]`

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use gaussmle::element::{Element, Label};
use gaussmle::error::GaussError;
use gaussmle::labels::encode_labels;
use gaussmle::score::{MatrixKind, Scorer};
use gaussmle::simd::{SimdLevel, available_levels};
use gaussmle::stats::{ClassStats, FitInput, Moments, class_stats, merge_stats};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, ShapeBuilder, s};

const U: f64 = f64::EPSILON / 2.0;

// ------------------------------------------------------------------------------------ PRNG

/// SplitMix64: tiny, fast, good enough for test-case generation, and fully deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// A small size, biased to 0, 1 and 2.
    fn size(&mut self, max: usize) -> usize {
        match self.below(8) {
            0 => 0,
            1 => 1,
            2 => 2,
            3 => self.below(8),
            _ => self.below(max + 1),
        }
    }
}

fn splitmix(seed: u64) -> u64 {
    Rng(seed).next()
}

// ------------------------------------------------------------------------ value generators

const SPECIAL: [f64; 16] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    f64::MIN_POSITIVE,
    5e-324,
    -5e-324,
    1e-310,
    1e308,
    -1e308,
    f64::MAX,
    f64::MIN,
    1e154,
    -1e154,
    0.5,
    3.0,
];

const NON_FINITE: [f64; 3] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];

/// How the values of one case are drawn.
#[derive(Clone, Copy, Debug)]
struct ValueMode {
    /// 0: small integers, 1: offset + scale·normal, 2: mixture with specials.
    kind: u8,
    offset: f64,
    scale: f64,
    p_special: f64,
    p_non_finite: f64,
}

impl ValueMode {
    fn draw(rng: &mut Rng) -> Self {
        let kind = rng.below(3) as u8;
        ValueMode {
            kind,
            offset: rng.pick(&[0.0, 0.0, 1e9, -1e4, 1e150, 1e-200, 3.5]),
            scale: rng.pick(&[1.0, 1.0, 1e-3, 1e100, 1e-300, 1e10]),
            p_special: if kind == 2 {
                rng.pick(&[0.05, 0.3, 1.0])
            } else {
                0.0
            },
            p_non_finite: if rng.chance(0.2) {
                rng.pick(&[0.001, 0.05, 0.5])
            } else {
                0.0
            },
        }
    }

    fn value(&self, rng: &mut Rng) -> f64 {
        if self.p_non_finite > 0.0 && rng.chance(self.p_non_finite) {
            return rng.pick(&NON_FINITE);
        }
        if self.p_special > 0.0 && rng.chance(self.p_special) {
            return rng.pick(&SPECIAL);
        }
        match self.kind {
            0 => rng.below(17) as f64 - 8.0,
            _ => self.offset + self.scale * rng.normal(),
        }
    }
}

// --------------------------------------------------------------------------------- layouts

/// An owned buffer plus the recipe for an `n × d` view into it with some layout.
struct Mat<E> {
    base: Array2<E>,
    kind: u8,
    row_step: isize,
    col_step: isize,
    n: usize,
    d: usize,
}

impl<E: Element> Mat<E> {
    /// Random layout; values from `gen` in logical order are not needed (the view is read back).
    fn new(rng: &mut Rng, n: usize, d: usize, mut value: impl FnMut(&mut Rng) -> f64) -> Self {
        let kind = rng.below(7) as u8;
        let steps = [1isize, 1, 2, 3, -1, -2];
        let (row_step, col_step) = match kind {
            2 => (rng.pick(&steps), rng.pick(&steps)),
            3 => (-1, 1),
            _ => (1, 1),
        };
        let (br, bc) = match kind {
            4 => (1, d), // one row broadcast to n rows (row stride 0)
            5 => (n, 1), // one column broadcast to d columns (col stride 0)
            6 => (1, 1), // one value broadcast everywhere
            _ => (n * row_step.unsigned_abs(), d * col_step.unsigned_abs()),
        };
        let fortran = kind == 1 || (kind == 2 && rng.chance(0.5));
        let values: Vec<E> = (0..br * bc).map(|_| E::from_f64(value(rng))).collect();
        let base = Array2::from_shape_vec((br, bc).set_f(fortran), values)
            .expect("shape of the generated buffer");
        Mat {
            base,
            kind,
            row_step,
            col_step,
            n,
            d,
        }
    }

    fn view(&self) -> ArrayView2<'_, E> {
        match self.kind {
            4..=6 => self.base.broadcast((self.n, self.d)).unwrap_or_else(|| {
                self.base
                    .slice(s![..0, ..0])
                    .into_shape_with_order((0, 0))
                    .unwrap()
            }),
            _ => self.base.slice(s![..;self.row_step, ..;self.col_step]),
        }
    }

    fn describe(&self) -> String {
        let v = self.view();
        format!(
            "{}x{} {} strides {:?}",
            v.nrows(),
            v.ncols(),
            std::any::type_name::<E>(),
            v.strides()
        )
    }
}

/// A 1-D vector with a random layout (contiguous, stepped, reversed, broadcast).
struct Vec1<T> {
    base: Array1<T>,
    kind: u8,
    step: isize,
    n: usize,
}

impl<T: Copy> Vec1<T> {
    fn new(rng: &mut Rng, n: usize, mut value: impl FnMut(&mut Rng) -> T) -> Self {
        let kind = rng.below(5) as u8;
        let step = match kind {
            1 => rng.pick(&[2isize, 3]),
            2 => rng.pick(&[-1isize, -2]),
            _ => 1,
        };
        let len = if kind == 3 {
            1
        } else {
            n * step.unsigned_abs()
        };
        let base: Array1<T> = (0..len).map(|_| value(rng)).collect();
        Vec1 {
            base,
            kind,
            step,
            n,
        }
    }
    fn view(&self) -> ArrayView1<'_, T> {
        if self.kind == 3 {
            return self.base.broadcast(self.n).expect("1-element broadcast");
        }
        self.base.slice(s![..;self.step])
    }
}

// ---------------------------------------------------------------------------- reference math

/// `x · 2^k`, exact unless the result is subnormal or overflows.
fn ldexp(mut x: f64, mut k: i64) -> f64 {
    while k > 1000 {
        x *= 2f64.powi(1000);
        k -= 1000;
    }
    while k < -1000 {
        x *= 2f64.powi(-1000);
        k += 1000;
    }
    x * 2f64.powi(k as i32)
}

/// Exponent `e` with `|x| < 2^(e+1)` (x finite, non-zero); subnormals report −1023.
fn exponent(x: f64) -> i64 {
    ((x.abs().to_bits() >> 52) & 0x7ff) as i64 - 1023
}

/// Neumaier-compensated sum.
#[derive(Default, Clone, Copy)]
struct KSum {
    s: f64,
    c: f64,
}

impl KSum {
    fn add(&mut self, v: f64) {
        let t = self.s + v;
        if !t.is_finite() {
            // Overflow (or an infinite term): the compensation is meaningless from here on.
            self.s = t;
            self.c = 0.0;
            return;
        }
        if self.s.abs() >= v.abs() {
            self.c += (self.s - t) + v;
        } else {
            self.c += (v - t) + self.s;
        }
        self.s = t;
    }
    fn get(self) -> f64 {
        if self.s.is_finite() {
            self.s + self.c
        } else {
            self.s
        }
    }
}

/// Reference statistics of one group: `(weight, mean per feature, m2 per feature, scale per
/// feature (Σw|x|/W), max |x − mean| per feature)`; values may be ±inf when they overflow.
struct RefGroup {
    weight: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
    scale: Vec<f64>,
    /// max |x| per feature (the scale of the shift-cancellation error, see KB3).
    maxabs: Vec<f64>,
    rows: usize,
}

/// Exact-ish statistics of rows `xs` (each of `d` values) with weights `ws`, scaled by powers
/// of two so no intermediate overflows or loses bits to underflow.
fn ref_group(xs: &[&[f64]], ws: &[f64], d: usize) -> RefGroup {
    let wmax = ws.iter().fold(0.0f64, |a, &w| a.max(w));
    if wmax == 0.0 {
        return RefGroup {
            weight: 0.0,
            mean: vec![0.0; d],
            m2: vec![0.0; d],
            scale: vec![0.0; d],
            maxabs: vec![0.0; d],
            rows: xs.len(),
        };
    }
    let ew = exponent(wmax);
    let wsc: Vec<f64> = ws.iter().map(|&w| ldexp(w, -ew)).collect();
    let mut wsum = KSum::default();
    wsc.iter().for_each(|&w| wsum.add(w));
    let w_s = wsum.get();
    let mut out = RefGroup {
        weight: ldexp(w_s, ew),
        mean: vec![0.0; d],
        m2: vec![0.0; d],
        scale: vec![0.0; d],
        maxabs: vec![0.0; d],
        rows: xs.len(),
    };
    for j in 0..d {
        let xmax = xs.iter().fold(0.0f64, |a, r| a.max(r[j].abs()));
        out.maxabs[j] = xmax;
        if xmax == 0.0 {
            continue;
        }
        let ex = exponent(xmax);
        let col: Vec<f64> = xs.iter().map(|r| ldexp(r[j], -ex)).collect();
        let (mut sum, mut abs) = (KSum::default(), KSum::default());
        for (&v, &w) in col.iter().zip(&wsc) {
            sum.add(w * v);
            abs.add(w * v.abs());
        }
        let mean_s = sum.get() / w_s;
        // Corrected two-pass: Σw(x−m)² − (Σw(x−m))²/W removes the first-order error of m.
        let (mut sq, mut lin) = (KSum::default(), KSum::default());
        for (&v, &w) in col.iter().zip(&wsc) {
            let t = v - mean_s;
            sq.add(w * t * t);
            lin.add(w * t);
        }
        let m2_s = (sq.get() - lin.get() * lin.get() / w_s).max(0.0);
        out.mean[j] = ldexp(mean_s + lin.get() / w_s, ex);
        out.m2[j] = ldexp(m2_s, 2 * ex + ew);
        out.scale[j] = ldexp(abs.get() / w_s, ex);
    }
    out
}

fn close(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= tol || got == want
}

// --------------------------------------------------------------------------------- targets

type Outcome = std::result::Result<(), String>;

#[derive(Default)]
struct Counters {
    cases: u64,
    per_target: [u64; 5],
    errors_returned: u64,
    ok_checked: u64,
}

fn levels() -> Vec<SimdLevel> {
    available_levels()
}

/// One `class_stats` case. Returns a description of the failure, if any.
fn fuzz_class_stats(rng: &mut Rng, c: &mut Counters) -> Outcome {
    let mode = ValueMode::draw(rng);
    let wide = rng.chance(0.1);
    let n = if rng.chance(0.05) {
        rng.below(20_000)
    } else {
        rng.size(if wide { 40 } else { 300 })
    };
    let d = if wide { rng.below(200) } else { rng.size(6) };
    let n_classes = if rng.chance(0.05) {
        rng.below(3000)
    } else {
        rng.size(6)
    };
    if rng.chance(0.5) {
        let x = Mat::<f64>::new(rng, n, d, |r| mode.value(r));
        stats_case(rng, c, &x, n_classes)
    } else {
        let x = Mat::<f32>::new(rng, n, d, |r| mode.value(r));
        stats_case(rng, c, &x, n_classes)
    }
}

fn stats_case<E: Element>(
    rng: &mut Rng,
    c: &mut Counters,
    x: &Mat<E>,
    n_classes: usize,
) -> Outcome {
    let (n, d) = (x.n, x.d);
    let p_bad_label = if rng.chance(0.15) { 0.05 } else { 0.0 };
    let n_labels = if rng.chance(0.03) {
        (n + 1).saturating_sub(rng.below(3))
    } else {
        n
    };
    let label_value = |r: &mut Rng| -> i64 {
        if p_bad_label > 0.0 && r.chance(p_bad_label) {
            r.pick(&[
                -1,
                n_classes as i64,
                i64::MIN,
                i64::MAX,
                i32::MIN as i64,
                -7,
            ])
        } else if n_classes == 0 {
            0
        } else {
            r.below(n_classes) as i64
        }
    };
    let labels64 = Vec1::new(rng, n_labels, label_value);
    let use_i32 = rng.chance(0.3);
    let labels32 = Vec1::new(rng, 0, |_| 0i32); // replaced below when used
    let labels32 = if use_i32 {
        Vec1 {
            base: labels64
                .view()
                .iter()
                .map(|&v| v.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
                .collect(),
            kind: 0,
            step: 1,
            n: n_labels,
        }
    } else {
        labels32
    };
    let weighted = rng.chance(0.5);
    let wmode = rng.below(5);
    let p_bad_w = if rng.chance(0.1) { 0.05 } else { 0.0 };
    let n_weights = if rng.chance(0.03) { n + 1 } else { n };
    let weights = Vec1::new(rng, n_weights, |r| {
        if p_bad_w > 0.0 && r.chance(p_bad_w) {
            return r.pick(&[-1.0, f64::NAN, f64::INFINITY, -0.5e-300, f64::NEG_INFINITY]);
        }
        match wmode {
            0 => 1.0,
            1 => r.below(4) as f64,
            2 => r.unit() * 10.0,
            3 => r.pick(&[0.0, 1e-300, 5e-324, 1e300, 1.0, 0.25]),
            _ => ldexp(r.unit() + 0.5, r.below(200) as i64 - 100),
        }
    });
    let n_threads = rng.pick(&[1, 1, 2, 3]);
    let level = rng.pick(&levels());

    let xv = x.view();
    let wv = weighted.then(|| weights.view());
    let labels_i64: Vec<i64> = if use_i32 {
        labels32.view().iter().map(|&v| v.to_i64()).collect()
    } else {
        labels64.view().to_vec()
    };
    let got = if use_i32 {
        class_stats(
            FitInput {
                x: xv,
                labels: labels32.view(),
                weights: wv,
                n_classes,
            },
            n_threads,
            level,
        )
    } else {
        class_stats(
            FitInput {
                x: xv,
                labels: labels64.view(),
                weights: wv,
                n_classes,
            },
            n_threads,
            level,
        )
    };
    let ctx = format!(
        "class_stats x={} labels(n={}, i32={use_i32}) weighted={weighted} n_classes={n_classes} \
         threads={n_threads} level={level:?}",
        x.describe(),
        labels_i64.len()
    );
    // Reference validity.
    let xs: Vec<Vec<f64>> = xv
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|v| v.to_f64()).collect())
        .collect();
    let ws: Vec<f64> = match wv {
        Some(w) => w.to_vec(),
        None => vec![1.0; labels_i64.len()],
    };
    if labels_i64.len() != n || ws.len() != n {
        return match got {
            Err(GaussError::ShapeMismatch { .. }) => {
                c.errors_returned += 1;
                Ok(())
            }
            other => Err(format!("{ctx}: expected ShapeMismatch, got {other:?}")),
        };
    }
    let ctx = if std::env::var_os("FUZZ_VERBOSE").is_some() {
        format!(
            "{ctx}\n  x = {xs:?}\n  labels = {labels_i64:?}\n  weights = {ws:?}\n  got = {got:?}"
        )
    } else {
        ctx
    };
    let bad_label = |row: usize| {
        let l = labels_i64[row];
        l < 0 || l as u64 >= n_classes as u64
    };
    let bad_weight = |row: usize| !(ws[row].is_finite() && ws[row] >= 0.0);
    let any_bad_label = (0..n).any(bad_label);
    let any_bad_weight = weighted && (0..n).any(bad_weight);
    let any_non_finite = xs.iter().flatten().any(|v| !v.is_finite());
    let expect_error = any_bad_label || any_bad_weight || any_non_finite;
    match got {
        Err(e) => {
            c.errors_returned += 1;
            let justified = match &e {
                GaussError::LabelOutOfRange { row, label, .. } => {
                    *row < n && bad_label(*row) && labels_i64[*row] == *label
                }
                GaussError::BadWeight { row, value } => {
                    weighted
                        && *row < n
                        && bad_weight(*row)
                        && ws[*row].to_bits() == value.to_bits()
                }
                GaussError::NonFinite {
                    row, col, value, ..
                } => {
                    *row < n
                        && *col < d
                        && !xs[*row][*col].is_finite()
                        && xs[*row][*col].to_bits() == value.to_bits()
                }
                GaussError::Overflow { .. } if !expect_error => {
                    let (near, _) = overflow_zone(&xs, &labels_i64, &ws, n_classes, d, weighted);
                    let (classes, _) = reference(&xs, &labels_i64, &ws, n_classes, d, weighted);
                    // KB4: 1/weight overflows for a class whose weight within one block (or in
                    // total) is below 1/f64::MAX, i.e. some rows have subnormal weights.
                    let tiny = weighted && ws.iter().any(|&w| w > 0.0 && w < 1.0 / f64::MAX);
                    if !near && tiny {
                        return Err(format!(
                            "KNOWN:KB4 {ctx}: spurious Overflow for a class whose total weight is \
                             below 1/f64::MAX"
                        ));
                    }
                    if std::env::var_os("FUZZ_VERBOSE").is_some() {
                        for k in 0..n_classes {
                            let rows: Vec<usize> =
                                (0..n).filter(|&i| labels_i64[i] == k as i64).collect();
                            let flat: Vec<f64> = rows.iter().flat_map(|&i| xs[i].clone()).collect();
                            let wk: Vec<f64> = rows.iter().map(|&i| ws[i]).collect();
                            let zeros = vec![0i64; rows.len()];
                            let r = gaussmle::stats::class_stats_of_rows(
                                &flat,
                                d,
                                &zeros,
                                Some(&wk),
                                1,
                            );
                            if r.is_err() {
                                eprintln!(
                                    "class {k} alone overflows: rows {:?} weights {wk:?}",
                                    rows.iter().map(|&i| &xs[i]).collect::<Vec<_>>()
                                );
                            }
                        }
                    }
                    let heavy = classes.iter().any(|g| {
                        g.maxabs
                            .iter()
                            .any(|m| g.weight * 2.0 * m > f64::MAX / 64.0)
                    });
                    if !near && weighted && heavy {
                        return Err(format!(
                            "KNOWN:KB7 {ctx}: spurious Overflow: weight·|x − shift| overflows \
                             although the statistics are finite"
                        ));
                    }
                    near
                }
                _ => false,
            };
            if justified {
                Ok(())
            } else {
                Err(format!("{ctx}: unjustified error {e:?} ({e})"))
            }
        }
        Ok(stats) => {
            if expect_error {
                return Err(format!(
                    "{ctx}: expected an error (bad label {any_bad_label}, bad weight \
                     {any_bad_weight}, non-finite {any_non_finite}), got Ok"
                ));
            }
            c.ok_checked += 1;
            check_stats(&stats, &xs, &labels_i64, &ws, n_classes, d, weighted)
                .map_err(|m| format!("{ctx}: {m}"))
        }
    }
}

/// `(near_overflow, must_overflow)` for the class and global statistics of valid input.
fn overflow_zone(
    xs: &[Vec<f64>],
    labels: &[i64],
    ws: &[f64],
    n_classes: usize,
    d: usize,
    weighted: bool,
) -> (bool, bool) {
    let (classes, global) = reference(xs, labels, ws, n_classes, d, weighted);
    let mut near = false;
    let mut must = false;
    for g in classes.iter().chain(std::iter::once(&global)) {
        for v in std::iter::once(g.weight).chain(g.m2.iter().copied()) {
            near |= v.is_nan() || v.abs() >= f64::MAX / 64.0;
            must |= !v.is_finite();
        }
    }
    (near, must)
}

fn reference(
    xs: &[Vec<f64>],
    labels: &[i64],
    ws: &[f64],
    n_classes: usize,
    d: usize,
    weighted: bool,
) -> (Vec<RefGroup>, RefGroup) {
    let classes = (0..n_classes)
        .map(|k| {
            let rows: Vec<usize> = (0..xs.len()).filter(|&i| labels[i] == k as i64).collect();
            let xr: Vec<&[f64]> = rows.iter().map(|&i| xs[i].as_slice()).collect();
            let wr: Vec<f64> = rows
                .iter()
                .map(|&i| if weighted { ws[i] } else { 1.0 })
                .collect();
            ref_group(&xr, &wr, d)
        })
        .collect();
    let all: Vec<&[f64]> = xs.iter().map(|r| r.as_slice()).collect();
    let global = ref_group(&all, &vec![1.0; xs.len()], d);
    (classes, global)
}

fn check_group(what: &str, got: &Moments, g: usize, want: &RefGroup, d: usize) -> Outcome {
    let w = got.weight[g];
    if !close(w, want.weight, 1e-12 * want.weight) {
        return Err(format!("{what}: weight {w} != reference {}", want.weight));
    }
    for j in 0..d {
        let k = g * d + j;
        let (mean, lo, m2) = (got.mean[k], got.mean_lo[k], got.m2[k]);
        if !(mean.is_finite() && lo.is_finite() && m2.is_finite() && m2 >= 0.0) {
            return Err(format!(
                "{what}[{j}]: non-finite/negative mean {mean} lo {lo} m2 {m2}"
            ));
        }
        if want.weight == 0.0 {
            if mean != 0.0 || m2 != 0.0 {
                return Err(format!(
                    "{what}[{j}]: zero-weight group has mean {mean} m2 {m2}"
                ));
            }
            continue;
        }
        // Products w·(x − K) below 2^-1022 lose absolute accuracy 2^-1074 each: an honest floor.
        let rows = want.rows as f64;
        // Each product w·(x − K) may underflow: absolute error up to 2^-1075 per row.
        let sub = 2.0 * rows * 4.9e-324 / want.weight;
        let mean_tol = 1e-11 * want.scale[j] + sub + 4.0 * 4.9e-324;
        if !close(mean + lo, want.mean[j], mean_tol) && !close(mean, want.mean[j], mean_tol) {
            let loose = 16.0 * U * want.maxabs[j] + sub;
            if close(mean + lo, want.mean[j], loose) {
                return Err(format!(
                    "KNOWN:KB3 {what}[{j}]: mean {mean} (+{lo}) != reference {} (tol {mean_tol:e}; \
                     within u·max|x|)",
                    want.mean[j]
                ));
            }
            return Err(format!(
                "{what}[{j}]: mean {mean} (+{lo}) != reference {} (tol {mean_tol:e})",
                want.mean[j]
            ));
        }
        if lo != 0.0 && lo.abs() > mean.abs() * U * 1.0000001 && mean != 0.0 {
            return Err(format!(
                "{what}[{j}]: |mean_lo| {lo} exceeds ulp(mean)/2 for mean {mean}"
            ));
        }
        let floor = want.weight * (64.0 * U * want.scale[j]).powi(2)
            + 4.0 * rows * 4.9e-324 * (1.0 + 2.0 * want.maxabs[j]);
        let m2_tol = 1e-9 * want.m2[j] + floor;
        if !close(m2, want.m2[j], m2_tol) {
            if want.maxabs[j] < 1e-145 {
                return Err(format!(
                    "KNOWN:KB5 {what}[{j}]: m2 {m2} != reference {} (tol {m2_tol:e}; data below \
                     1e-145: δ² underflows in the merge)",
                    want.m2[j]
                ));
            }
            let loose = m2_tol + want.weight * (64.0 * U * want.maxabs[j]).powi(2);
            if close(m2, want.m2[j], loose) {
                return Err(format!(
                    "KNOWN:KB3 {what}[{j}]: m2 {m2} != reference {} (tol {m2_tol:e}; within \
                     W·(u·max|x|)²)",
                    want.m2[j]
                ));
            }
            return Err(format!(
                "{what}[{j}]: m2 {m2} != reference {} (tol {m2_tol:e})",
                want.m2[j]
            ));
        }
    }
    Ok(())
}

fn check_stats(
    stats: &ClassStats,
    xs: &[Vec<f64>],
    labels: &[i64],
    ws: &[f64],
    n_classes: usize,
    d: usize,
    weighted: bool,
) -> Outcome {
    let (near, must) = overflow_zone(xs, labels, ws, n_classes, d, weighted);
    let (classes, global) = reference(xs, labels, ws, n_classes, d, weighted);
    if must {
        let bad: Vec<String> = classes
            .iter()
            .enumerate()
            .flat_map(|(k, g)| {
                g.m2.iter()
                    .enumerate()
                    .map(move |(j, v)| (format!("class {k}[{j}]"), k, j, *v))
            })
            .filter(|(_, _, _, v)| !v.is_finite())
            .map(|(name, k, j, _)| format!("{name} m2 = {}", stats.classes.m2[k * d + j]))
            .chain(
                global
                    .m2
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| !v.is_finite())
                    .map(|(j, _)| format!("global[{j}] m2 = {}", stats.global.m2[j])),
            )
            .collect();
        return Err(format!(
            "KNOWN:KB6 Ok although the exact statistics overflow float64 ({})",
            bad.join(", ")
        ));
    }
    if stats.classes.n_groups != n_classes || stats.classes.n_features != d {
        return Err("class statistics have the wrong shape".into());
    }
    if near {
        // Within a factor 64 of float64's max: only finiteness is required of an Ok result.
        let all = stats
            .classes
            .m2
            .iter()
            .chain(&stats.global.m2)
            .chain(&stats.classes.weight);
        return if all.clone().all(|v| v.is_finite()) {
            Ok(())
        } else {
            Err("Ok result with non-finite statistics".into())
        };
    }
    for (k, want) in classes.iter().enumerate() {
        check_group(&format!("class {k}"), &stats.classes, k, want, d)?;
    }
    check_group("global", &stats.global, 0, &global, d)
}

/// Split the rows, compute statistics of each part, merge them in a random order, compare
/// with one pass; also feed arbitrary parts to `Moments::from_parts` and `merge`.
fn fuzz_merge(rng: &mut Rng, c: &mut Counters) -> Outcome {
    if rng.chance(0.4) {
        return fuzz_from_parts(rng, c);
    }
    let n = rng.size(400);
    let d = rng.size(5);
    let n_classes = 1 + rng.size(5);
    let mut mode = ValueMode::draw(rng);
    mode.p_non_finite = 0.0;
    let x: Vec<f64> = (0..n * d).map(|_| mode.value(rng)).collect();
    let labels: Vec<i64> = (0..n).map(|_| rng.below(n_classes) as i64).collect();
    let weighted = rng.chance(0.5);
    let ws: Vec<f64> = (0..n).map(|_| rng.below(5) as f64 * 0.5).collect();
    let xa = ArrayView2::from_shape((n, d), &x).expect("shape");
    let run = |rows: std::ops::Range<usize>| {
        class_stats(
            FitInput {
                x: xa.slice(s![rows.clone(), ..]),
                labels: ArrayView1::from(&labels[rows.clone()]),
                weights: weighted.then(|| ArrayView1::from(&ws[rows.clone()])),
                n_classes,
            },
            1,
            SimdLevel::Scalar,
        )
    };
    let whole = run(0..n);
    if std::env::var_os("FUZZ_VERBOSE").is_some() {
        eprintln!(
            "merge case: x = {x:?}\n  labels = {labels:?}\n  weights({weighted}) = {ws:?}\n  whole = {whole:?}"
        );
    }
    let mut cuts: Vec<usize> = (0..rng.below(4)).map(|_| rng.below(n + 1)).collect();
    cuts.push(0);
    cuts.push(n);
    cuts.sort_unstable();
    let mut parts = Vec::new();
    for w in cuts.windows(2) {
        match run(w[0]..w[1]) {
            Ok(p) => parts.push(p),
            Err(e) => {
                // A part may overflow where the whole does too; the whole must then fail too.
                return match whole {
                    Err(_) => {
                        c.errors_returned += 1;
                        Ok(())
                    }
                    Ok(_) => {
                        let xs: Vec<Vec<f64>> =
                            (0..n).map(|i| x[i * d..(i + 1) * d].to_vec()).collect();
                        let wsr = if weighted { ws.clone() } else { vec![1.0; n] };
                        let part = w[0]..w[1];
                        let (part_near, _) = overflow_zone(
                            &xs[part.clone()],
                            &labels[part.clone()],
                            &wsr[part],
                            n_classes,
                            d,
                            weighted,
                        );
                        if part_near {
                            // Within a factor 64 of f64::MAX either outcome is allowed.
                            c.errors_returned += 1;
                            return Ok(());
                        }
                        let (_, must) = overflow_zone(&xs, &labels, &wsr, n_classes, d, weighted);
                        let tag = if must { "KNOWN:KB6 " } else { "" };
                        Err(format!(
                            "{tag}merge: part {w:?} failed ({e}) but the whole did not"
                        ))
                    }
                };
            }
        }
    }
    // Random merge order (merging is commutative up to rounding).
    let mut acc = ClassStats {
        classes: Moments::zeros(n_classes, d),
        global: Moments::zeros(1, d),
    };
    while !parts.is_empty() {
        let p = parts.swap_remove(rng.below(parts.len()));
        let merged = merge_stats(&acc.classes, &p.classes).and_then(|cl| {
            merge_stats(&acc.global, &p.global).map(|gl| ClassStats {
                classes: cl,
                global: gl,
            })
        });
        match merged {
            Ok(m) => acc = m,
            // Merging parts whose union overflows must report the overflow, as the whole does.
            Err(GaussError::Overflow { .. }) if whole.is_err() => {
                c.errors_returned += 1;
                return Ok(());
            }
            Err(e) => return Err(format!("merge of valid parts failed: {e}")),
        }
    }
    let ctx = format!("merge n={n} d={d} classes={n_classes} weighted={weighted} cuts={cuts:?}");
    let xs: Vec<Vec<f64>> = x
        .chunks(d.max(1))
        .take(n)
        .map(|r| r[..d].to_vec())
        .collect();
    let xs = if d == 0 { vec![Vec::new(); n] } else { xs };
    let wsr = if weighted { ws.clone() } else { vec![1.0; n] };
    match whole {
        Err(_) => {
            // The whole overflowed: the merged result must not pretend to be finite and exact.
            c.errors_returned += 1;
            let finite = acc
                .classes
                .m2
                .iter()
                .chain(&acc.global.m2)
                .all(|v| v.is_finite())
                && acc.classes.weight.iter().all(|v| v.is_finite());
            if finite {
                let (near, _) = overflow_zone(&xs, &labels, &wsr, n_classes, d, weighted);
                if !near {
                    return Err(format!(
                        "{ctx}: whole overflowed but merge is finite and not near"
                    ));
                }
            }
            Ok(())
        }
        Ok(_) => {
            c.ok_checked += 1;
            check_stats(&acc, &xs, &labels, &wsr, n_classes, d, weighted)
                .map_err(|m| format!("{ctx}: merged parts: {m}"))
        }
    }
}

/// Arbitrary (often invalid) parts through `from_parts`, then `merge`: errors or finite results.
fn fuzz_from_parts(rng: &mut Rng, c: &mut Counters) -> Outcome {
    let g = rng.size(4);
    let d = rng.size(4);
    let junk = |r: &mut Rng| -> f64 {
        if r.chance(0.05) {
            r.pick(&NON_FINITE)
        } else if r.chance(0.3) {
            r.pick(&SPECIAL)
        } else {
            r.normal() * 10.0
        }
    };
    let make = |r: &mut Rng| {
        let len = |r: &mut Rng, k: usize| if r.chance(0.05) { k + 1 } else { k };
        let weight: Vec<f64> = (0..len(r, g)).map(|_| junk(r).abs()).collect();
        let mean: Vec<f64> = (0..len(r, g * d)).map(|_| junk(r)).collect();
        // A valid low part: |mean_lo| <= ulp(mean)/2.
        let mean_lo: Vec<f64> = mean
            .iter()
            .chain(std::iter::repeat(&1.0))
            .take(len(r, g * d))
            .map(|m| m * U * (r.unit() - 0.5))
            .collect();
        let m2: Vec<f64> = (0..len(r, g * d)).map(|_| junk(r).abs()).collect();
        Moments::from_parts(weight, mean, mean_lo, m2, d)
    };
    let a = make(rng);
    let b = make(rng);
    match (a, b) {
        (Ok(a), Ok(b)) => match a.clone().merge(&b) {
            Ok(()) => {
                let mut m = a.clone();
                m.merge(&b).expect("merge succeeded once");
                c.ok_checked += 1;
                let finite = m
                    .weight
                    .iter()
                    .chain(&m.mean)
                    .chain(&m.mean_lo)
                    .chain(&m.m2);
                if finite.clone().all(|v| v.is_finite()) {
                    Ok(())
                } else {
                    Err(format!(
                        "KNOWN:KB1 Moments::merge of valid statistics returned Ok with non-finite values: \
                         a = {a:?}, b = {b:?}, merged = {m:?}"
                    ))
                }
            }
            Err(_) => {
                c.errors_returned += 1;
                Ok(())
            }
        },
        _ => {
            c.errors_returned += 1;
            Ok(())
        }
    }
}

/// `Scorer::new` with random (often invalid) parameters, then scoring/prediction.
fn fuzz_scorer(rng: &mut Rng, c: &mut Counters) -> Outcome {
    let n_classes = if rng.chance(0.05) {
        rng.below(40)
    } else {
        rng.size(9)
    };
    let d = if rng.chance(0.05) {
        rng.below(70)
    } else {
        rng.size(6)
    };
    let p_bad = if rng.chance(0.2) { 0.05 } else { 0.0 };
    let mut mode = ValueMode::draw(rng);
    mode.p_non_finite = 0.0;
    let mean: Vec<f64> = (0..n_classes * d)
        .map(|_| {
            if p_bad > 0.0 && rng.chance(p_bad) {
                rng.pick(&NON_FINITE)
            } else {
                mode.value(rng)
            }
        })
        .collect();
    let var_mode = rng.below(4);
    let var: Vec<f64> = (0..n_classes * d)
        .map(|_| {
            if p_bad > 0.0 && rng.chance(p_bad) {
                return rng.pick(&[0.0, -1.0, -0.0, f64::NAN, f64::INFINITY]);
            }
            match var_mode {
                0 => 1.0,
                1 => (rng.normal() * 3.0).exp(),
                2 => rng.pick(&[f64::MIN_POSITIVE, 1e-300, 1e300, f64::MAX, 1e-10, 4.0]),
                _ => rng.pick(&[5e-324, 1e-310, 1.0, 2.0]),
            }
        })
        .collect();
    let log_prior: Vec<f64> = (0..n_classes)
        .map(|_| {
            if p_bad > 0.0 && rng.chance(p_bad) {
                return rng.pick(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1e308]);
            }
            if rng.chance(0.1) {
                f64::NEG_INFINITY
            } else {
                (rng.unit() + 1e-3).ln()
            }
        })
        .collect();
    let mean_a = Array2::from_shape_vec((n_classes, d), mean).expect("shape");
    let var_a = Array2::from_shape_vec((n_classes, d), var).expect("shape");
    let (vr, vc) = if rng.chance(0.03) {
        (n_classes + 1, d)
    } else {
        (n_classes, d)
    };
    let var_a = if (vr, vc) != (n_classes, d) {
        Array2::ones((vr, vc))
    } else {
        var_a
    };
    let lp_len = if rng.chance(0.03) {
        n_classes + 1
    } else {
        n_classes
    };
    let lp_a: Array1<f64> = (0..lp_len)
        .map(|k| log_prior.get(k).copied().unwrap_or(0.0))
        .collect();
    let ctx = format!("Scorer::new C={n_classes} d={d}");
    let got = Scorer::new(mean_a.view(), var_a.view(), lp_a.view());
    // Reference validation.
    let shape_ok = var_a.dim() == mean_a.dim() && lp_a.len() == n_classes;
    let mut expected_bad = !shape_ok || n_classes == 0;
    if shape_ok {
        expected_bad |= mean_a.iter().any(|m| !m.is_finite());
        // The scorer supports normal variances only (1/(2 var) must be finite): subnormal
        // ones are rejected by design (docs/hardening.md, KB2).
        expected_bad |= var_a
            .iter()
            .any(|v| !(v.is_finite() && *v >= f64::MIN_POSITIVE));
        expected_bad |= lp_a.iter().any(|p| p.is_nan() || *p == f64::INFINITY);
        expected_bad |= !lp_a.iter().any(|p| p.is_finite());
    }
    let scorer = match got {
        Err(e) => {
            c.errors_returned += 1;
            let justified = match &e {
                GaussError::ShapeMismatch { .. } => !shape_ok,
                GaussError::BadVariance {
                    class,
                    feature,
                    value,
                } => {
                    shape_ok
                        && var_a.get((*class, *feature)).is_some_and(|v| {
                            v.to_bits() == value.to_bits()
                                && !(v.is_finite() && *v >= f64::MIN_POSITIVE)
                        })
                }
                GaussError::BadParameter { .. } => expected_bad,
                GaussError::Overflow { .. } => false,
                _ => false,
            };
            return if justified && expected_bad {
                Ok(())
            } else {
                Err(format!("{ctx}: unjustified error {e:?}"))
            };
        }
        Ok(s) => {
            if expected_bad {
                return Err(format!("{ctx}: invalid parameters accepted"));
            }
            s
        }
    };
    // Scoring.
    let n = if rng.chance(0.05) {
        rng.below(3000)
    } else {
        rng.size(70)
    };
    let xd = if rng.chance(0.03) { d + 1 } else { d };
    let mut xmode = ValueMode::draw(rng);
    if rng.chance(0.5) {
        xmode.offset = mean_a.iter().next().copied().unwrap_or(0.0);
    }
    let result = if rng.chance(0.5) {
        let x = Mat::<f64>::new(rng, n, xd, |r| xmode.value(r));
        score_case(rng, c, &scorer, &x, &mean_a, &var_a, &lp_a)
    } else {
        let x = Mat::<f32>::new(rng, n, xd, |r| xmode.value(r));
        score_case(rng, c, &scorer, &x, &mean_a, &var_a, &lp_a)
    };
    // KB2: a variance below 0.5/f64::MAX makes 1/(2 var) infinite in the scorer.
    let subnormal_var = var_a.iter().any(|v| 0.5 / v == f64::INFINITY);
    match result {
        Err(m) if subnormal_var => Err(format!("KNOWN:KB2 (variance below 0.5/f64::MAX) {m}")),
        other => other,
    }
}

/// Reference jll for one row: `(values, well_conditioned)`.
fn ref_jll(
    row: &[f64],
    mean: &Array2<f64>,
    var: &Array2<f64>,
    lp: &Array1<f64>,
) -> (Vec<f64>, Vec<f64>, bool) {
    let (cn, d) = mean.dim();
    let log_two_pi = (2.0 * std::f64::consts::PI).ln();
    let mut good = true;
    let mut vals = Vec::with_capacity(cn);
    let mut tols = Vec::with_capacity(cn);
    for k in 0..cn {
        let mut log_det = KSum::default();
        let mut q = KSum::default();
        let mut qabs = 0.0;
        for j in 0..d {
            let v = var[[k, j]];
            good &= v >= 4.0 * f64::MIN_POSITIVE;
            log_det.add(v.ln());
            let t = row[j] - mean[[k, j]];
            let term = 0.5 * (t / v) * t;
            good &= term.is_finite();
            q.add(term);
            qabs += term;
        }
        let k_c = lp[k] - 0.5 * (log_det.get() + d as f64 * log_two_pi);
        let jll = k_c - q.get();
        if lp[k] == f64::NEG_INFINITY {
            vals.push(f64::NEG_INFINITY);
            tols.push(0.0);
            continue;
        }
        good &= k_c.is_finite() && qabs < 1e300;
        vals.push(jll);
        tols.push(8.0 * (d as f64 + 4.0) * U * (k_c.abs() + qabs + lp[k].abs() + 1.0));
    }
    (vals, tols, good)
}

fn score_case<E: Element>(
    rng: &mut Rng,
    c: &mut Counters,
    scorer: &Scorer,
    x: &Mat<E>,
    mean: &Array2<f64>,
    var: &Array2<f64>,
    lp: &Array1<f64>,
) -> Outcome {
    let n_threads = rng.pick(&[1, 1, 2, 4]);
    let level = rng.pick(&levels());
    let xv = x.view();
    let cn = scorer.n_classes();
    let d = scorer.n_features();
    let predict = rng.chance(0.3);
    let kind = rng.pick(&[
        MatrixKind::JointLogLikelihood,
        MatrixKind::LogProba,
        MatrixKind::Proba,
    ]);
    let out_f32 = rng.chance(0.3);
    let out_rows = if rng.chance(0.03) { x.n + 1 } else { x.n };
    let ctx = format!(
        "score x={} C={cn} d={d} predict={predict} kind={kind:?} out_f32={out_f32} \
         threads={n_threads} level={level:?}",
        x.describe()
    );
    // Output buffers: C or F order, or a strided window of a bigger array.
    let out_layout = rng.below(3);
    let mut big64 = Array2::<f64>::from_elem((out_rows * 2 + 1, cn * 3 + 1), f64::NAN);
    let mut big32 = Array2::<f32>::from_elem((out_rows * 2 + 1, cn * 3 + 1), f32::NAN);
    let mut pred = Array1::<i64>::from_elem(out_rows, -99);
    let result = if predict {
        scorer.predict_into(xv, pred.view_mut(), n_threads, level)
    } else if out_f32 {
        let view = out_view(&mut big32, out_rows, cn, out_layout);
        scorer.score_into(xv, view, kind, n_threads, level)
    } else {
        let view = out_view(&mut big64, out_rows, cn, out_layout);
        scorer.score_into(xv, view, kind, n_threads, level)
    };
    let xs: Vec<Vec<f64>> = xv
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|v| v.to_f64()).collect())
        .collect();
    let shape_bad = x.d != d || out_rows != x.n;
    let non_finite = xs.iter().flatten().any(|v| !v.is_finite());
    // Per-row references (meaningful for finite rows; an error may come from an earlier row
    // than the first non-finite one, since tiles are scored in order).
    let refs: Vec<_> = if shape_bad {
        Vec::new()
    } else {
        xs.iter().map(|r| ref_jll(r, mean, var, lp)).collect()
    };
    let all_neg_inf = |r: usize| refs[r].0.iter().all(|v| *v == f64::NEG_INFINITY);
    let ctx = if std::env::var_os("FUZZ_VERBOSE").is_some() {
        format!(
            "{ctx}\n  mean = {mean:?}\n  var = {var:?}\n  log_prior = {lp:?}\n  x[0..2] = {:?}\n  \
             ref[0..2] = {:?}",
            &xs[..xs.len().min(2)],
            &refs[..refs.len().min(2)]
        )
    } else {
        ctx
    };
    match result {
        Err(e) => {
            c.errors_returned += 1;
            let ok = match &e {
                GaussError::ShapeMismatch { .. } => shape_bad,
                GaussError::NonFinite {
                    row, col, value, ..
                } => {
                    !shape_bad
                        && xs
                            .get(*row)
                            .and_then(|r| r.get(*col))
                            .is_some_and(|v| !v.is_finite() && v.to_bits() == value.to_bits())
                }
                GaussError::NoFiniteLikelihood { row } => {
                    !shape_bad
                        && kind_needs_finite(predict, kind)
                        && *row < refs.len()
                        && xs[*row].iter().all(|v| v.is_finite())
                        && (all_neg_inf(*row) || !refs[*row].2)
                }
                _ => false,
            };
            if ok {
                Ok(())
            } else {
                Err(format!("{ctx}: unjustified error {e:?}"))
            }
        }
        Ok(()) => {
            if shape_bad || non_finite {
                return Err(format!(
                    "{ctx}: expected an error (shape {shape_bad}, non-finite {non_finite})"
                ));
            }
            c.ok_checked += 1;
            for (r, (want, tols, good)) in refs.iter().enumerate() {
                let fail = |m: String| Err(format!("{ctx}: row {r} {xs_r:?}: {m}", xs_r = xs[r]));
                if predict {
                    let p = pred[r];
                    if p < 0 || p as usize >= cn {
                        return fail(format!("predicted class {p} out of range"));
                    }
                    if *good && all_neg_inf(r) {
                        return fail("Ok although every class has zero likelihood".into());
                    }
                    let best = want.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let slack = tols.iter().cloned().fold(0.0, f64::max) * 2.0;
                    if *good && want[p as usize] < best - slack {
                        return fail(format!(
                            "predicted {p} (ref jll {}) but the best ref jll is {best} (jll {want:?})",
                            want[p as usize]
                        ));
                    }
                    continue;
                }
                let row: Vec<f64> = if out_f32 {
                    out_row(&big32, r, cn, out_layout)
                        .iter()
                        .map(|v| v.to_f64())
                        .collect()
                } else {
                    out_row(&big64, r, cn, out_layout)
                };
                if row.iter().any(|v| v.is_nan()) {
                    return fail(format!("NaN in output {row:?} (reference {want:?})"));
                }
                let f32_tol = |v: f64| {
                    if out_f32 {
                        v.abs() * 1.2e-7 + 1e-37
                    } else {
                        0.0
                    }
                };
                match kind {
                    MatrixKind::JointLogLikelihood => {
                        for k in 0..cn {
                            let want_k = if out_f32 {
                                f64::from(want[k] as f32)
                            } else {
                                want[k]
                            };
                            if *good && !close(row[k], want_k, tols[k] + f32_tol(want[k])) {
                                return fail(format!(
                                    "jll[{k}] {} != reference {} (tol {:e})",
                                    row[k], want[k], tols[k]
                                ));
                            }
                            if row[k] == f64::INFINITY {
                                return fail("jll is +inf".into());
                            }
                        }
                    }
                    MatrixKind::LogProba | MatrixKind::Proba => {
                        if *good && all_neg_inf(r) {
                            return fail("Ok although every class has zero likelihood".into());
                        }
                        let max = want.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let total: f64 = want.iter().map(|v| (v - max).exp()).sum();
                        let slack = 4.0 * tols.iter().cloned().fold(0.0, f64::max) + 1e-13;
                        for k in 0..cn {
                            let lpk = want[k] - max - total.ln();
                            let (got_k, want_k) = if kind == MatrixKind::Proba {
                                (row[k], lpk.exp())
                            } else {
                                (row[k], lpk)
                            };
                            let want_k = if out_f32 {
                                f64::from(want_k as f32)
                            } else {
                                want_k
                            };
                            let tol = if kind == MatrixKind::Proba {
                                slack + 1e-15 + f32_tol(1.0)
                            } else {
                                slack + 1e-13 * want_k.abs() + f32_tol(want_k)
                            };
                            // Where the reference's tolerance reaches beyond the output's
                            // range, the exact log p may too: -inf is then its correct
                            // rounding (the exact tier resolves gaps the f64 reference cannot).
                            let lowest = if out_f32 {
                                -f64::from(f32::MAX)
                            } else {
                                -f64::MAX
                            };
                            let below_range = got_k == f64::NEG_INFINITY && want_k - tol < lowest;
                            if *good && !close(got_k, want_k, tol) && !below_range {
                                return fail(format!(
                                    "{kind:?}[{k}] {got_k} != reference {want_k} (tol {tol:e})"
                                ));
                            }
                        }
                        if kind == MatrixKind::Proba {
                            let s: f64 = row.iter().sum();
                            if (s - 1.0).abs() > 1e-12 * cn as f64 + f32_tol(cn as f64)
                                || row.iter().any(|p| !(0.0..=1.0).contains(p))
                            {
                                return fail(format!("probabilities {row:?} do not sum to 1"));
                            }
                        } else if row.iter().any(|v| *v > 1e-12) {
                            return fail(format!("log-probabilities {row:?} exceed 0"));
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

fn kind_needs_finite(predict: bool, kind: MatrixKind) -> bool {
    predict || kind != MatrixKind::JointLogLikelihood
}

fn out_view<T>(
    big: &mut Array2<T>,
    rows: usize,
    cols: usize,
    layout: usize,
) -> ArrayViewMut2<'_, T> {
    match layout {
        0 => big.slice_mut(s![..rows, ..cols]),
        1 => big.slice_mut(s![1..2 * rows + 1;2, ..3 * cols;3]),
        _ => big
            .slice_mut(s![..rows;-1, ..cols;-1])
            .reversed_axes()
            .reversed_axes(),
    }
}

fn out_row<T: Copy>(big: &Array2<T>, r: usize, cols: usize, layout: usize) -> Vec<T> {
    let rows = (big.nrows() - 1) / 2;
    let v = match layout {
        0 => big.slice(s![..rows, ..cols]),
        1 => big.slice(s![1..2 * rows + 1;2, ..3 * cols;3]),
        _ => big.slice(s![..rows;-1, ..cols;-1]),
    };
    v.row(r).to_vec()
}

/// `encode_labels` against sort + dedup + binary search.
fn fuzz_labels(rng: &mut Rng, c: &mut Counters) -> Outcome {
    let n = if rng.chance(0.05) {
        rng.below(50_000)
    } else {
        rng.size(300)
    };
    let mode = rng.below(5);
    let base = rng.pick(&[0i64, -5, i64::MIN, i64::MAX - 100, 1 << 40, i32::MIN as i64]);
    let v = Vec1::new(rng, n, |r| match mode {
        0 => base.wrapping_add(r.below(10) as i64),
        1 => base.wrapping_add(r.below(5_000_000) as i64),
        2 => r.next() as i64,
        3 => r.pick(&[i64::MIN, i64::MAX, 0, -1, 1]),
        _ => (r.below(2000) as i64 - 1000) * 3,
    });
    let use_i32 = rng.chance(0.3);
    let values: Vec<i64> = if use_i32 {
        v.view().iter().map(|&x| x as i32 as i64).collect()
    } else {
        v.view().to_vec()
    };
    let (classes, codes) = if use_i32 {
        let narrowed: Array1<i32> = v.view().iter().map(|&x| x as i32).collect();
        encode_labels(narrowed.view())
    } else {
        encode_labels(v.view())
    };
    let mut want = values.clone();
    want.sort_unstable();
    want.dedup();
    c.ok_checked += 1;
    if classes != want {
        return Err(format!(
            "encode_labels classes {classes:?} != {want:?} for {values:?}"
        ));
    }
    for (i, (&code, &val)) in codes.iter().zip(&values).enumerate() {
        if code < 0 || want.get(code as usize) != Some(&val) {
            return Err(format!(
                "encode_labels code {code} at row {i} for label {val}"
            ));
        }
    }
    if codes.len() != values.len() {
        return Err("encode_labels returned the wrong number of codes".into());
    }
    Ok(())
}

fn run_case(seed: u64, c: &mut Counters) -> Outcome {
    let mut rng = Rng(seed);
    let target = rng.below(5);
    c.cases += 1;
    c.per_target[target] += 1;
    let result = catch_unwind(AssertUnwindSafe(|| match target {
        0 | 1 => fuzz_class_stats(&mut rng, c),
        2 => fuzz_merge(&mut rng, c),
        3 => fuzz_scorer(&mut rng, c),
        _ => fuzz_labels(&mut rng, c),
    }));
    match result {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "<non-string panic>".into());
            Err(format!("PANIC (target {target}): {msg}"))
        }
    }
}

fn main() {
    let mut seconds = 60.0f64;
    let mut seed: u64 = 0x6761_7573_736d_6c65;
    let mut corpus: Option<String> = None;
    let mut replay: Vec<u64> = Vec::new();
    let mut keep_going = false;
    let mut strict = false;
    let mut max_cases = u64::MAX;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let parse_u64 = |s: &str| -> u64 {
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).expect("hex seed"),
            None => s.parse().expect("integer"),
        }
    };
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--seconds" => seconds = value.parse().expect("--seconds takes a number"),
            "--seed" => seed = parse_u64(&value),
            "--corpus" => corpus = Some(value),
            "--replay" => replay.push(parse_u64(&value)),
            "--max-cases" => max_cases = parse_u64(&value),
            "--keep-going" => {
                keep_going = true;
                i += 1;
                continue;
            }
            "--strict" => {
                strict = true;
                i += 1;
                continue;
            }
            other => {
                eprintln!("unknown argument {other}; see the module docs");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    // Panics are caught and reported per case; print the message, skip the backtrace noise.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("  panic: {info}");
    }));
    let mut c = Counters::default();
    let mut failures: Vec<(u64, String)> = Vec::new();
    // Known core bugs (docs/hardening.md, "Findings"): counted, first seed kept; fatal with --strict.
    let mut known: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut report = |case_seed: u64, r: Outcome, c: &Counters| {
        let Err(m) = r else { return };
        if let Some((_, rest)) = m.split_once("KNOWN:")
            && !strict
        {
            let tag = rest.split_whitespace().next().unwrap_or("?").to_string();
            let e = known.entry(tag).or_insert((0, case_seed));
            e.0 += 1;
            return;
        }
        eprintln!("FAIL seed=0x{case_seed:016x}: {m}");
        failures.push((case_seed, m));
        if !keep_going {
            eprintln!("replay with: fuzz_core --replay 0x{case_seed:016x}");
            eprintln!("after {} cases", c.cases);
            std::process::exit(1);
        }
    };
    let start = Instant::now();
    if !replay.is_empty() {
        for s in replay {
            let r = run_case(s, &mut c);
            report(s, r, &c);
        }
    } else {
        if let Some(path) = corpus {
            let text = std::fs::read_to_string(&path).expect("read corpus");
            for line in text
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
            {
                if !line.is_empty() {
                    let s = parse_u64(line);
                    let r = run_case(s, &mut c);
                    report(s, r, &c);
                }
            }
            println!("corpus: {} seeds replayed", c.cases);
        }
        let budget = Duration::from_secs_f64(seconds);
        let mut k: u64 = 0;
        while start.elapsed() < budget && k < max_cases {
            let s = splitmix(seed ^ k.wrapping_mul(0xD6E8_FEB8_6659_FD93));
            let r = run_case(s, &mut c);
            report(s, r, &c);
            k += 1;
        }
    }
    println!(
        "fuzz_core: {} cases in {:.1} s (class_stats {}, merge {}, scorer {}, labels {}); \
         {} returned errors checked, {} Ok results checked against the reference",
        c.cases,
        start.elapsed().as_secs_f64(),
        c.per_target[0] + c.per_target[1],
        c.per_target[2],
        c.per_target[3],
        c.per_target[4],
        c.errors_returned,
        c.ok_checked
    );
    for (tag, (count, first)) in &known {
        println!(
            "known bug {tag}: {count} cases (first: --replay 0x{first:016x} --strict); \
             see docs/hardening.md"
        );
    }
    if !failures.is_empty() {
        eprintln!("{} failing cases", failures.len());
        std::process::exit(1);
    }
}
