//! Unit tests of the pure-Rust core against exact references (no Python needed):
//! `cargo test --no-default-features`.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, s};

use crate::element::{Element, Label};
use crate::error::GaussError;
use crate::labels::encode_labels;
use crate::score::{MatrixKind, Scorer};
use crate::simd::{SimdLevel, available_levels};
use crate::stats::{ClassStats, FitInput, GUARD_FALLBACKS, Moments, class_stats};

/// A small deterministic generator (SplitMix64), so the tests need no extra crate.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Exact mean and MLE variance of integer-valued data via i128 arithmetic:
/// var = (n Σx² − (Σx)²) / n², exact in integers, then one rounding.
fn exact_integer_moments(values: &[i64]) -> (f64, f64) {
    let n = values.len() as i128;
    let sum: i128 = values.iter().map(|&v| i128::from(v)).sum();
    let sum_sq: i128 = values.iter().map(|&v| i128::from(v) * i128::from(v)).sum();
    let mean = sum as f64 / n as f64;
    let var = (n * sum_sq - sum * sum) as f64 / (n * n) as f64;
    (mean, var)
}

fn fit(
    x: ArrayView2<'_, f64>,
    y: &[i64],
    w: Option<&[f64]>,
    c: usize,
    threads: usize,
    level: SimdLevel,
) -> ClassStats {
    let input = FitInput {
        x,
        labels: ArrayView1::from(y),
        weights: w.map(ArrayView1::from),
        n_classes: c,
    };
    class_stats(input, threads, level).expect("valid input")
}

/// Unweighted single-thread statistics with labels of either type, errors kept.
fn try_fit<L: Label>(
    x: ArrayView2<'_, f64>,
    y: &[L],
    c: usize,
    level: SimdLevel,
) -> crate::error::Result<ClassStats> {
    let input = FitInput {
        x,
        labels: ArrayView1::from(y),
        weights: None,
        n_classes: c,
    };
    class_stats(input, 1, level)
}

fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
    }
}

#[test]
fn offset_data_is_exact_for_every_level_and_layout() {
    // Integers around 1e12 (exactly representable), so an i128 reference is exact.
    let (n, d, c) = (5000, 3, 4);
    let mut rng = SplitMix(7);
    let offset = 1_000_000_000_000i64;
    let ints: Vec<i64> = (0..n * d)
        .map(|_| offset + (rng.next_u64() % 2001) as i64 - 1000)
        .collect();
    let y: Vec<i64> = (0..n).map(|i| (i * 7 % c) as i64).collect();
    let x = Array2::from_shape_vec((n, d), ints.iter().map(|&v| v as f64).collect()).unwrap();
    let x_f = x.t().as_standard_layout().into_owned().reversed_axes();
    assert_eq!(
        x_f.strides(),
        &[1, n as isize],
        "Fortran order: columns contiguous"
    );
    let x_rev = x.slice(s![.., ..;-1]);
    for level in available_levels() {
        for (layout, view, flipped) in [
            ("C", x.view(), false),
            ("F", x_f.view(), false),
            ("reversed", x_rev, true),
        ] {
            let stats = fit(view, &y, None, c, 1, level);
            for class in 0..c {
                for j in 0..d {
                    let src_col = if flipped { d - 1 - j } else { j };
                    let vals: Vec<i64> = (0..n)
                        .filter(|&i| y[i] == class as i64)
                        .map(|i| ints[i * d + src_col])
                        .collect();
                    let (mean, var) = exact_integer_moments(&vals);
                    let k = class * d + j;
                    assert!(
                        rel(stats.classes.mean[k], mean) < 1e-15,
                        "{layout} {level:?} mean"
                    );
                    let v = stats.classes.m2[k] / stats.classes.weight[class];
                    assert!(rel(v, var) < 1e-13, "{layout} {level:?} var {v} vs {var}");
                }
            }
        }
    }
}

#[test]
fn results_are_bit_identical_for_any_thread_count() {
    let (n, d) = (300_000, 5);
    let mut rng = SplitMix(11);
    let x = Array2::from_shape_fn((n, d), |_| 1e6 + rng.unit());
    let y: Vec<i64> = (0..n).map(|i| (i % 3) as i64).collect();
    let w: Vec<f64> = (0..n).map(|i| 1.0 + (i % 5) as f64).collect();
    let one = fit(x.view(), &y, Some(&w), 3, 1, SimdLevel::Scalar);
    for threads in [2, 3, 8] {
        assert_eq!(
            one,
            fit(x.view(), &y, Some(&w), 3, threads, SimdLevel::Scalar)
        );
    }
}

#[test]
fn weighted_statistics_match_expanded_rows() {
    // Integer weights equal repeating rows: the weighted fit must equal the unweighted fit of
    // the expanded data (up to rounding).
    let mut rng = SplitMix(3);
    let (n, d) = (400, 4);
    let x = Array2::from_shape_fn((n, d), |_| 50.0 + rng.unit());
    let y: Vec<i64> = (0..n).map(|i| (i % 2) as i64).collect();
    let w: Vec<f64> = (0..n).map(|i| (i % 4) as f64).collect();
    let weighted = fit(x.view(), &y, Some(&w), 2, 1, SimdLevel::Scalar);
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for (i, &label) in y.iter().enumerate() {
        for _ in 0..(i % 4) {
            rows.extend(x.row(i).iter().copied());
            labels.push(label);
        }
    }
    let expanded = Array2::from_shape_vec((labels.len(), d), rows).unwrap();
    let plain = fit(expanded.view(), &labels, None, 2, 1, SimdLevel::Scalar);
    for k in 0..2 * d {
        assert!(rel(weighted.classes.mean[k], plain.classes.mean[k]) < 1e-14);
        assert!(rel(weighted.classes.m2[k], plain.classes.m2[k]) < 1e-12);
    }
    // The global statistics stay unweighted (they feed var_smoothing, as in scikit-learn).
    let unweighted = fit(x.view(), &y, None, 2, 1, SimdLevel::Scalar);
    for j in 0..d {
        assert!(rel(weighted.global.m2[j], unweighted.global.m2[j]) < 1e-13);
    }
}

#[test]
fn merge_of_a_split_equals_the_whole() {
    let mut rng = SplitMix(5);
    let (n, d, c) = (10_000, 3, 5);
    let x = Array2::from_shape_fn((n, d), |_| 1e9 + rng.unit());
    let y: Vec<i64> = (0..n).map(|i| ((i * 13) % c) as i64).collect();
    let whole = fit(x.view(), &y, None, c, 1, SimdLevel::Scalar);
    for cut in [1, 777, 5000, 9999] {
        let a = fit(
            x.slice(s![..cut, ..]),
            &y[..cut],
            None,
            c,
            1,
            SimdLevel::Scalar,
        );
        let b = fit(
            x.slice(s![cut.., ..]),
            &y[cut..],
            None,
            c,
            1,
            SimdLevel::Scalar,
        );
        let mut merged: Moments = a.classes.clone();
        merged.merge(&b.classes).unwrap();
        for k in 0..c * d {
            assert!(rel(merged.mean[k], whole.classes.mean[k]) < 1e-15);
            assert!(rel(merged.m2[k], whole.classes.m2[k]) < 1e-12, "cut {cut}");
        }
    }
    let mut identity = Moments::zeros(c, d);
    identity.merge(&whole.classes).unwrap();
    assert_eq!(identity, whole.classes);
}

#[test]
fn bad_input_is_an_error_with_a_position() {
    let mut x = Array2::<f64>::zeros((10, 3));
    x[[7, 2]] = f64::NAN;
    let y = [0i64; 10];
    let input = FitInput {
        x: x.view(),
        labels: ArrayView1::from(&y[..]),
        weights: None,
        n_classes: 1,
    };
    match class_stats(input, 1, SimdLevel::Scalar) {
        Err(GaussError::NonFinite { row: 7, col: 2, .. }) => {}
        other => panic!("expected NonFinite at (7, 2), got {other:?}"),
    }
    let good = Array2::<f64>::zeros((3, 2));
    let bad_labels = [0i64, 2, 0];
    let input = FitInput {
        x: good.view(),
        labels: ArrayView1::from(&bad_labels[..]),
        weights: None,
        n_classes: 2,
    };
    assert!(matches!(
        class_stats(input, 1, SimdLevel::Scalar),
        Err(GaussError::LabelOutOfRange {
            row: 1,
            label: 2,
            ..
        })
    ));
    let labels = [0i64, 1, 0];
    let weights = [1.0, -1.0, 1.0];
    let input = FitInput {
        x: good.view(),
        labels: ArrayView1::from(&labels[..]),
        weights: Some(ArrayView1::from(&weights[..])),
        n_classes: 2,
    };
    assert!(matches!(
        class_stats(input, 1, SimdLevel::Scalar),
        Err(GaussError::BadWeight { row: 1, .. })
    ));
    let big = Array2::from_elem((4, 1), 1e308);
    let mixed = [0i64, 0, 0, 0];
    let mut big_mixed = big.clone();
    big_mixed[[1, 0]] = -1e308;
    let input = FitInput {
        x: big_mixed.view(),
        labels: ArrayView1::from(&mixed[..]),
        weights: None,
        n_classes: 1,
    };
    assert!(matches!(
        class_stats(input, 1, SimdLevel::Scalar),
        Err(GaussError::Overflow { .. })
    ));
}

fn reference_jll(x: &[f64], mean: &Array2<f64>, var: &Array2<f64>, log_prior: &[f64]) -> Vec<f64> {
    (0..mean.nrows())
        .map(|c| {
            let mut acc = log_prior[c];
            for (j, &v) in x.iter().enumerate() {
                let t = v - mean[[c, j]];
                acc -= 0.5 * (2.0 * std::f64::consts::PI * var[[c, j]]).ln()
                    + t * t / (2.0 * var[[c, j]]);
            }
            acc
        })
        .collect()
}

/// `kind` scores of `x` into a new float64 matrix, on one thread.
fn scores<E: Element>(
    scorer: &Scorer,
    x: ArrayView2<'_, E>,
    kind: MatrixKind,
    level: SimdLevel,
) -> Result<Array2<f64>, GaussError> {
    let mut out = Array2::<f64>::zeros((x.nrows(), scorer.n_classes()));
    scorer.score_into(x, out.view_mut(), kind, 1, level)?;
    Ok(out)
}

#[test]
fn scoring_matches_the_direct_formula_on_every_level() {
    let mut rng = SplitMix(9);
    // n ≤ 8 takes the small-batch tiles (one vector of rows) on the AVX levels.
    for (n, d, c) in [
        (1, 1, 1),
        (1, 37, 10),
        (3, 9, 5),
        (8, 16, 6),
        (9, 3, 4),
        (17, 2, 2),
        (33, 5, 7),
        (100, 40, 13),
    ] {
        let x = Array2::from_shape_fn((n, d), |_| 1e4 * rng.unit());
        let mean = Array2::from_shape_fn((c, d), |_| 1e4 * rng.unit());
        let var = Array2::from_shape_fn((c, d), |_| 1.0 + rng.unit().abs() * 100.0);
        let log_prior: Vec<f64> = (0..c).map(|k| -((k + 1) as f64).ln()).collect();
        let scorer =
            Scorer::new(mean.view(), var.view(), ArrayView1::from(&log_prior[..])).unwrap();
        for level in available_levels() {
            let out = scores(&scorer, x.view(), MatrixKind::JointLogLikelihood, level).unwrap();
            let mut best = Array1::<i64>::zeros(n);
            scorer
                .predict_into(x.view(), best.view_mut(), 2, level)
                .unwrap();
            let mut proba = Array2::<f64>::zeros((n, c));
            scorer
                .score_into(x.view(), proba.view_mut(), MatrixKind::Proba, 2, level)
                .unwrap();
            for i in 0..n {
                let reference =
                    reference_jll(x.row(i).as_slice().unwrap(), &mean, &var, &log_prior);
                let scale: f64 = reference.iter().map(|v| v.abs()).fold(0.0, f64::max);
                for k in 0..c {
                    assert!(
                        (out[[i, k]] - reference[k]).abs() <= 1e-13 * scale,
                        "{level:?} ({n},{d},{c})"
                    );
                }
                let argmax = (0..c).fold(0, |b, k| if out[[i, k]] > out[[i, b]] { k } else { b });
                assert_eq!(best[i], argmax as i64);
                let total: f64 = proba.row(i).sum();
                assert!((total - 1.0).abs() < 1e-12);
            }
        }
    }
}

#[test]
fn narrow_rows_and_few_classes_score_alike_on_every_level_and_dtype() {
    // d ≤ 4 and C ≤ 4 take the regrouping pack and write on AVX-512: every row count around
    // the 8-row vectors and 32-row tiles, float32 input (widened exactly, so it must score
    // bit for bit like its float64 copy), and the FMA levels bit for bit alike (same order).
    let mut rng = SplitMix(41);
    for d in 1..=6 {
        for c in 1..=6 {
            let mean = Array2::from_shape_fn((c, d), |_| 3.0 * rng.unit());
            let var = Array2::from_shape_fn((c, d), |_| 0.5 + rng.unit().abs());
            let log_prior: Vec<f64> = (0..c).map(|k| -((k + 2) as f64).ln()).collect();
            let scorer =
                Scorer::new(mean.view(), var.view(), ArrayView1::from(&log_prior[..])).unwrap();
            for n in [1, 7, 8, 9, 31, 32, 33, 71] {
                let x32 = Array2::from_shape_fn((n, d), |_| (4.0 * rng.unit()) as f32);
                let x64 = x32.mapv(f64::from);
                let mut fma_result: Option<Array2<f64>> = None;
                for level in available_levels() {
                    for kind in [MatrixKind::JointLogLikelihood, MatrixKind::Proba] {
                        let out64 = scores(&scorer, x64.view(), kind, level).unwrap();
                        let out32 = scores(&scorer, x32.view(), kind, level).unwrap();
                        assert_eq!(out64, out32, "{level:?} {kind:?} n={n} d={d} c={c}");
                        if kind == MatrixKind::Proba {
                            for row in out64.rows() {
                                assert!((row.sum() - 1.0).abs() < 1e-12);
                            }
                            continue;
                        }
                        for i in 0..n {
                            let reference = reference_jll(
                                x64.row(i).as_slice().unwrap(),
                                &mean,
                                &var,
                                &log_prior,
                            );
                            for k in 0..c {
                                let scale = reference[k].abs().max(1.0);
                                assert!(
                                    (out64[[i, k]] - reference[k]).abs() <= 1e-14 * scale,
                                    "{level:?} n={n} d={d} c={c} row {i} class {k}"
                                );
                            }
                        }
                        if level != SimdLevel::Scalar {
                            match &fma_result {
                                Some(previous) => assert_eq!(previous, &out64, "{level:?}"),
                                None => fma_result = Some(out64),
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn non_finite_rows_are_found_from_the_sums_and_huge_rows_still_score() {
    // The kernel's quadratic sums flag a tile; the tile is then checked value by value. A
    // huge finite row overflows its sums too, and must still score −inf without an error.
    let mut rng = SplitMix(5);
    for d in [1usize, 2, 5, 33] {
        let c = 3;
        let mean = Array2::from_shape_fn((c, d), |_| rng.unit());
        let var = Array2::from_shape_fn((c, d), |_| 1.0 + rng.unit().abs());
        let log_prior = vec![-(c as f64).ln(); c];
        let scorer =
            Scorer::new(mean.view(), var.view(), ArrayView1::from(&log_prior[..])).unwrap();
        for level in available_levels() {
            for (row, col, bad) in [
                (0, 0, f64::NAN),
                (37, d - 1, f64::INFINITY),
                (69, d / 2, f64::NEG_INFINITY),
            ] {
                let mut x = Array2::from_shape_fn((70, d), |_| rng.unit());
                x[[40, 0]] = 1e300; // overflows (x − μ)² in the same run of tiles
                x[[row, col]] = bad;
                let err =
                    scores(&scorer, x.view(), MatrixKind::JointLogLikelihood, level).unwrap_err();
                assert!(
                    matches!(err, GaussError::NonFinite { row: r, col: k, .. } if r == row && k == col),
                    "{level:?} d={d}: {err:?}"
                );
            }
            let mut x = Array2::from_shape_fn((70, d), |_| rng.unit());
            x[[40, 0]] = 1e300;
            let out = scores(&scorer, x.view(), MatrixKind::JointLogLikelihood, level).unwrap();
            assert!(
                out.row(40).iter().all(|&v| v == f64::NEG_INFINITY),
                "{level:?}"
            );
            assert!(out.row(39).iter().all(|v| v.is_finite()), "{level:?}");
        }
    }
}

#[test]
fn the_first_bad_row_in_row_order_is_reported_whatever_the_tile_size() {
    // A row whose squared distance overflows for every class (zero likelihood: an error for
    // predict and the posteriors, −inf for jll) before a NaN row of the same tile: every
    // level and batch size (small batches use one-vector tiles) names the earlier row.
    let d = 3;
    let mean = Array2::<f64>::zeros((2, d));
    let var = Array2::<f64>::ones((2, d));
    let log_prior = [0.5f64.ln(); 2];
    let scorer = Scorer::new(mean.view(), var.view(), ArrayView1::from(&log_prior[..])).unwrap();
    for n in [3usize, 7, 8, 40] {
        for (huge, nan) in [(0, 1), (1, n - 1), (n - 2, n - 1)] {
            let mut x = Array2::<f64>::zeros((n, d));
            x[[huge, 1]] = 1e200;
            x[[nan, 2]] = f64::NAN;
            for level in available_levels() {
                for kind in [MatrixKind::Proba, MatrixKind::LogProba] {
                    let err = scores(&scorer, x.view(), kind, level).unwrap_err();
                    assert!(
                        matches!(err, GaussError::NoFiniteLikelihood { row } if row == huge),
                        "{level:?} n={n} {huge}/{nan}: {err:?}"
                    );
                }
                let mut best = Array1::<i64>::zeros(n);
                let err = scorer
                    .predict_into(x.view(), best.view_mut(), 1, level)
                    .unwrap_err();
                assert!(
                    matches!(err, GaussError::NoFiniteLikelihood { row } if row == huge),
                    "{level:?} n={n}: {err:?}"
                );
                let err =
                    scores(&scorer, x.view(), MatrixKind::JointLogLikelihood, level).unwrap_err();
                assert!(
                    matches!(err, GaussError::NonFinite { row, col: 2, .. } if row == nan),
                    "{level:?} n={n}: {err:?}"
                );
            }
            // The other order: the NaN row first is reported as such.
            let mut x = Array2::<f64>::zeros((n, d));
            x[[huge, 2]] = f64::NAN;
            x[[nan, 1]] = 1e200;
            for level in available_levels() {
                let mut best = Array1::<i64>::zeros(n);
                let err = scorer
                    .predict_into(x.view(), best.view_mut(), 1, level)
                    .unwrap_err();
                assert!(
                    matches!(err, GaussError::NonFinite { row, .. } if row == huge),
                    "{level:?} n={n}: {err:?}"
                );
            }
        }
    }
}

/// Two classes take their own posterior loop (one exp per row). A third class with log
/// prior −inf sends the same rows through the general loop and changes nothing else, so the
/// first two columns must be bit-identical, fast path and recomputed rows alike.
fn assert_two_class_loop_matches_general(
    mean: &Array2<f64>,
    var: &Array2<f64>,
    prior: [f64; 2],
    x: &Array2<f64>,
) {
    let two = Scorer::new(mean.view(), var.view(), ArrayView1::from(&prior[..])).unwrap();
    let mean3 = ndarray::concatenate![ndarray::Axis(0), *mean, mean.slice(s![..1, ..])];
    let var3 = ndarray::concatenate![ndarray::Axis(0), *var, var.slice(s![..1, ..])];
    let prior3 = [prior[0], prior[1], f64::NEG_INFINITY];
    let three = Scorer::new(mean3.view(), var3.view(), ArrayView1::from(&prior3[..])).unwrap();
    for level in available_levels() {
        for kind in [MatrixKind::Proba, MatrixKind::LogProba] {
            let a = scores(&two, x.view(), kind, level);
            let b = scores(&three, x.view(), kind, level);
            let (a, b) = match (a, b) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(ea), Err(eb)) => {
                    assert_eq!(format!("{ea}"), format!("{eb}"), "{level:?} {kind:?}");
                    continue;
                }
                (a, b) => panic!("{level:?} {kind:?}: {a:?} against {b:?}"),
            };
            for ((i, c), v) in a.indexed_iter() {
                assert_eq!(
                    v.to_bits(),
                    b[[i, c]].to_bits(),
                    "{level:?} {kind:?} prior {prior:?} row {i} class {c}"
                );
            }
        }
    }
}

#[test]
fn two_class_posteriors_equal_the_general_path_bitwise() {
    let mut rng = SplitMix(21);
    // Scale 1: close calls (both posteriors well inside (0, 1)); 1e3: decided rows and rows
    // recomputed by the slower tiers.
    for (n, d, scale) in [
        (1usize, 1usize, 1.0),
        (7, 3, 1.0),
        (8, 2, 1.0),
        (33, 2, 1.0),
        (100, 5, 1.0),
        (33, 2, 1e3),
        (100, 40, 1e3),
    ] {
        let mean = Array2::from_shape_fn((2, d), |_| scale * rng.unit());
        let var = Array2::from_shape_fn((2, d), |_| 1.0 + rng.unit().abs() * 10.0);
        let mut x = Array2::from_shape_fn((n, d), |_| 2.0 * scale * rng.unit());
        x[[0, 0]] = mean[[1, 0]]; // a row close to class 1 (a decided winner)
        assert_two_class_loop_matches_general(&mean, &var, [0.3f64.ln(), 0.7f64.ln()], &x);
    }
    // Exact ties (class 0 wins them), a class that can never win, gaps whose exp is
    // subnormal or zero, and a row far from both means (huge |jll|).
    let mean = Array2::from_shape_vec((2, 2), vec![-1.0, -1.0, 1.0, 1.0]).unwrap();
    let var = Array2::<f64>::ones((2, 2));
    let x = Array2::from_shape_vec(
        (9, 2),
        vec![
            0.0, 0.0, 0.5, 0.5, -0.5, 0.0, 1.0, 1.0, -30.0, -30.0, 13.0, 14.0, 1e150, 0.0, 0.0,
            -1e150, 2.0, -2.0,
        ],
    )
    .unwrap();
    for prior in [
        [0.0, 0.0],
        [0.3f64.ln(), 0.7f64.ln()],
        [f64::NEG_INFINITY, 0.0],
        [0.0, f64::NEG_INFINITY],
        [0.0, -745.5],
        [-740.0, 0.0],
        [0.0, -1e300],
    ] {
        assert_two_class_loop_matches_general(&mean, &var, prior, &x);
    }
}

#[test]
fn proba_stays_finite_when_every_likelihood_is_tiny() {
    // jll ≈ −1e300 for every class: the max shift keeps exp() in range.
    let mean = Array2::from_shape_vec((2, 1), vec![0.0, 1.0]).unwrap();
    let var = Array2::from_elem((2, 1), 1e-290);
    let log_prior = [0.5f64.ln(), 0.5f64.ln()];
    let scorer = Scorer::new(mean.view(), var.view(), ArrayView1::from(&log_prior[..])).unwrap();
    let x = Array2::from_elem((3, 1), 1e5);
    let jll = scores(
        &scorer,
        x.view(),
        MatrixKind::JointLogLikelihood,
        SimdLevel::Scalar,
    )
    .unwrap();
    assert!(jll.iter().all(|v| *v < -1e299 && v.is_finite()));
    let proba = scores(&scorer, x.view(), MatrixKind::Proba, SimdLevel::Scalar).unwrap();
    for row in proba.rows() {
        assert!(row.iter().all(|p| p.is_finite()));
        assert!((row.sum() - 1.0).abs() < 1e-15);
        assert_eq!(row[1], 1.0, "the nearer class takes all the mass");
    }
}

#[test]
fn scorer_rejects_bad_parameters_and_impossible_classes_get_zero() {
    let mean = Array2::<f64>::zeros((2, 2));
    let zero_var = Array2::<f64>::zeros((2, 2));
    let prior = [0.0, 0.0];
    assert!(matches!(
        Scorer::new(mean.view(), zero_var.view(), ArrayView1::from(&prior[..])),
        Err(GaussError::BadVariance {
            class: 0,
            feature: 0,
            ..
        })
    ));
    let var = Array2::<f64>::ones((2, 2));
    let never = [0.0, f64::NEG_INFINITY];
    let scorer = Scorer::new(mean.view(), var.view(), ArrayView1::from(&never[..])).unwrap();
    let x = Array2::<f64>::zeros((5, 2));
    let proba = scores(&scorer, x.view(), MatrixKind::Proba, SimdLevel::Scalar).unwrap();
    assert!(proba.column(1).iter().all(|p| *p == 0.0));
    let mut nan_x = x.clone();
    nan_x[[3, 1]] = f64::INFINITY;
    let mut out = Array1::<i64>::zeros(5);
    assert!(matches!(
        scorer.predict_into(nan_x.view(), out.view_mut(), 1, SimdLevel::Scalar),
        Err(GaussError::NonFinite { row: 3, col: 1, .. })
    ));
}

#[test]
fn labels_encode_like_numpy_unique() {
    let y = [5i64, -3, 5, 1 << 40, -3, 0];
    let (classes, codes) = encode_labels(ArrayView1::from(&y[..]));
    assert_eq!(classes, vec![-3, 0, 5, 1 << 40]);
    assert_eq!(codes, vec![2, 0, 2, 3, 0, 1]);
    let dense = [3i32, 1, 2, 1];
    let (classes, codes) = encode_labels(ArrayView1::from(&dense[..]));
    assert_eq!(classes, vec![1, 2, 3]);
    assert_eq!(codes, vec![2, 0, 1, 0]);
}

/// Exact weighted mean and MLE variance of integer data with integer weights (i128).
fn exact_weighted_moments(values: &[i64], weights: &[i64]) -> (f64, f64) {
    let w: i128 = weights.iter().map(|&v| i128::from(v)).sum();
    let s: i128 = values
        .iter()
        .zip(weights)
        .map(|(&x, &k)| i128::from(k) * i128::from(x))
        .sum();
    let q: i128 = values
        .iter()
        .zip(weights)
        .map(|(&x, &k)| i128::from(k) * i128::from(x) * i128::from(x))
        .sum();
    (s as f64 / w as f64, (w * q - s * s) as f64 / (w * w) as f64)
}

/// The one-pass fast paths (C order, f32 and f64) over many blocks and chunks, on every SIMD
/// level: the register-resident path (AVX-512, unweighted, d·C ≤ 16, with a partial last
/// vector since n is odd), the streamed path (unweighted, 5 classes) and the bucketed path
/// (weighted, and unweighted with 40 classes of 37 or 64 features); feature counts that
/// exercise 4-vector strips, single vectors and scalar tails; a class that first appears late in the chunk after
/// zero-weight rows; a class whose first row is a far outlier; a drifting class (the chunk guard
/// fails and the block-wise path redoes the chunk). Reference: exact i128.
#[test]
fn one_pass_fits_are_exact_across_blocks_tails_levels_and_dtypes() {
    let n = 40_003usize;
    let shapes = [1usize, 2, 4, 5, 8, 13, 37, 64]
        .map(|d| (d, 5usize))
        .into_iter()
        .chain([(37, 40), (64, 40), (4, 4), (2, 2), (1, 3)]);
    for (d, c, drift) in shapes.flat_map(|(d, c)| [(d, c, false), (d, c, true)]) {
        // The last class is the late one; the others are drawn uniformly.
        let late = c - 1;
        let mut rng = SplitMix(d as u64);
        // Values exact in f32 as well: 8e6 ± 1000 (< 2^24).
        let offset = 8_000_000i64;
        let mut ints: Vec<i64> = (0..n * d)
            .map(|_| offset + (rng.next_u64() % 2001) as i64 - 1000)
            .collect();
        let y: Vec<i64> = (0..n)
            .map(|i| match i {
                // The late class: three rows at the start, then only in the second half.
                _ if i < 3 || (i >= n / 2 && i % 9 == 0) => late as i64,
                _ => (rng.next_u64() % late as u64) as i64,
            })
            .collect();
        // The first row of class 3 (or the last regular class) is an outlier far from the others.
        let outlier = 3.min(late as i64 - 1);
        let first = y.iter().position(|&v| v == outlier).unwrap();
        ints[first * d..(first + 1) * d].fill(offset + 4_000_000);
        // The late class drifts: its first three rows lie far below the rest, so the shift taken
        // from the first block fails the chunk guard and the block-wise path redoes the chunk.
        if drift {
            ints[..3 * d].fill(offset - 500_000);
        }
        // Weights 0..=3 (1 for the first rows); the late class's first rows in the second half
        // have weight 0.
        let weights: Vec<i64> = (0..n)
            .map(|i| {
                if i < 3 {
                    1
                } else if y[i] == late as i64 && (n / 2..n / 2 + 200).contains(&i) {
                    0
                } else {
                    (rng.next_u64() % 4) as i64
                }
            })
            .collect();
        let wf: Vec<f64> = weights.iter().map(|&v| v as f64).collect();
        let x64 = Array2::from_shape_vec((n, d), ints.iter().map(|&v| v as f64).collect()).unwrap();
        let x32 = x64.mapv(|v| v as f32);
        for level in available_levels() {
            for weighted in [false, true] {
                let w = weighted.then_some(ArrayView1::from(&wf[..]));
                let input64 = FitInput {
                    x: x64.view(),
                    labels: ArrayView1::from(&y[..]),
                    weights: w,
                    n_classes: c,
                };
                let input32 = FitInput {
                    x: x32.view(),
                    labels: ArrayView1::from(&y[..]),
                    weights: w,
                    n_classes: c,
                };
                for (dtype, stats) in [
                    ("f64", class_stats(input64, 1, level).unwrap()),
                    ("f32", class_stats(input32, 1, level).unwrap()),
                ] {
                    for class in 0..c {
                        let members: Vec<usize> =
                            (0..n).filter(|&i| y[i] == class as i64).collect();
                        let unit = vec![1i64; members.len()];
                        let ws: Vec<i64> = members.iter().map(|&i| weights[i]).collect();
                        for j in 0..d {
                            let vals: Vec<i64> = members.iter().map(|&i| ints[i * d + j]).collect();
                            let (mean, var) =
                                exact_weighted_moments(&vals, if weighted { &ws } else { &unit });
                            let k = class * d + j;
                            let what = format!(
                                "d={d} C={c} {drift} {level:?} {dtype} w={weighted} c={class}"
                            );
                            assert!(rel(stats.classes.mean[k], mean) < 1e-15, "{what} mean");
                            let v = stats.classes.m2[k] / stats.classes.weight[class];
                            assert!(rel(v, var) < 1e-13, "{what} var {v} vs {var}");
                        }
                    }
                    if weighted {
                        // Global statistics: unweighted over all rows.
                        let unit = vec![1i64; n];
                        for j in 0..d {
                            let vals: Vec<i64> = (0..n).map(|i| ints[i * d + j]).collect();
                            let (mean, var) = exact_weighted_moments(&vals, &unit);
                            let v = stats.global.m2[j] / stats.global.weight[0];
                            assert!(rel(stats.global.mean[j], mean) < 1e-15, "global mean");
                            // 1e-12: a chunk whose guard fails (the drifting rows, or an
                            // outlier far from the first block's mean) is redone by the
                            // block-wise path, whose in-block sums are plain (error about
                            // n_b·u·S2 with blocks of up to 4096 rows); measured 1–2e-13 here.
                            assert!(
                                rel(v, var) < 1e-12,
                                "d={d} {level:?} global var {v} vs {var}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The streamed path (small class table) reports the first bad label (negative or too large,
/// inside or past a class's centring look-ahead) and the first NaN by position, on every level.
#[test]
fn streamed_fit_reports_the_first_bad_label_and_nan() {
    let (n, d, c) = (2_000usize, 16usize, 3usize);
    let mut rng = SplitMix(11);
    let x = Array2::from_shape_fn((n, d), |_| (rng.next_u64() % 1000) as f64);
    let y: Vec<i64> = (0..n).map(|i| (i % c) as i64).collect();
    for level in available_levels() {
        for (bad_row, label) in [(5usize, -1i64), (1_500, 3), (1_999, i64::MIN)] {
            let mut labels = y.clone();
            labels[bad_row.max(1_900)..].iter_mut().for_each(|l| *l = 7);
            labels[bad_row] = label;
            match try_fit(x.view(), &labels, c, level) {
                Err(GaussError::LabelOutOfRange { row, label: l, .. }) => {
                    assert_eq!((row, l), (bad_row, label), "{level:?}");
                }
                other => panic!("{level:?}: expected a bad label at {bad_row}, got {other:?}"),
            }
        }
        let mut with_nan = x.clone();
        with_nan[[1_200, 3]] = f64::NAN;
        with_nan[[1_700, 0]] = f64::INFINITY;
        match try_fit(with_nan.view(), &y, c, level) {
            Err(GaussError::NonFinite {
                row: 1_200, col: 3, ..
            }) => {}
            other => panic!("{level:?}: expected NonFinite at (1200, 3), got {other:?}"),
        }
    }
}

/// int32 labels (what `GaussianNB` passes after encoding) give the same statistics as int64 on
/// every fast path, and a bad int32 label inside a vector of the register-resident path is
/// reported at its own row.
#[test]
fn int32_labels_match_int64_and_report_their_row() {
    let mut rng = SplitMix(5);
    for (n, d, c) in [
        (5_001usize, 2usize, 3usize),
        (5_001, 1, 8),
        (3_001, 16, 4),
        (2_001, 64, 40),
    ] {
        let x = Array2::from_shape_fn((n, d), |_| 1e6 + (rng.next_u64() % 1000) as f64);
        let y64: Vec<i64> = (0..n).map(|_| (rng.next_u64() % c as u64) as i64).collect();
        let y32: Vec<i32> = y64.iter().map(|&v| v as i32).collect();
        for level in available_levels() {
            let wide = try_fit(x.view(), &y64, c, level).unwrap();
            let narrow = try_fit(x.view(), &y32, c, level).unwrap();
            assert_eq!(wide.classes.mean, narrow.classes.mean, "{level:?} d={d}");
            assert_eq!(wide.classes.m2, narrow.classes.m2, "{level:?} d={d}");
            assert_eq!(
                wide.classes.weight, narrow.classes.weight,
                "{level:?} d={d}"
            );
            let mut bad = y32.clone();
            bad[n - 2] = c as i32;
            bad[n - 1] = -1;
            let err = try_fit(x.view(), &bad, c, level);
            match err {
                Err(GaussError::LabelOutOfRange { row, label, .. }) => {
                    assert_eq!((row, label), (n - 2, c as i64), "{level:?} d={d}");
                }
                other => panic!("{level:?} d={d}: expected a bad label, got {other:?}"),
            }
        }
    }
}

/// A class whose first row is a far outlier, and a smaller class (2% of the rows) that starts
/// with one, over 2^20 rows: the streamed and register-resident paths centre their shifts on
/// enough rows that no chunk fails the guard (with a 256-row centring window every chunk went
/// to the block-wise path: 9.6 ms instead of 1.2), and the result is exact to the fast paths'
/// bound.
#[test]
fn an_outlying_first_row_keeps_the_fast_path_accuracy() {
    let n = 1usize << 20;
    for d in [2usize, 32] {
        let mut rng = SplitMix(d as u64 + 99);
        let mut ints: Vec<i64> = (0..n * d)
            .map(|_| (rng.next_u64() % 2001) as i64 - 1000)
            .collect();
        // (At 0.2% the small class has 2 rows in the 1024-row window of d = 32; its first
        // chunk then fails the guard and is redone by the block-wise path, as documented.)
        let y: Vec<i64> = (0..n).map(|i| i64::from(i % 50 == 7)).collect();
        ints[..d].fill(30_000_000); // class 0's first row
        ints[7 * d..8 * d].fill(-30_000_000); // class 1's first row
        let x = Array2::from_shape_vec((n, d), ints.iter().map(|&v| v as f64).collect()).unwrap();
        for level in available_levels() {
            GUARD_FALLBACKS.with(|count| count.set(0));
            let stats = try_fit(x.view(), &y, 2, level).unwrap();
            let fallbacks = GUARD_FALLBACKS.with(std::cell::Cell::get);
            assert_eq!(
                fallbacks, 0,
                "d={d} {level:?}: chunks redone by the block-wise path"
            );
            for class in 0..2usize {
                let members: Vec<usize> = (0..n).filter(|&i| y[i] == class as i64).collect();
                let unit = vec![1i64; members.len()];
                for j in [0, d - 1] {
                    let vals: Vec<i64> = members.iter().map(|&i| ints[i * d + j]).collect();
                    let (_, var) = exact_weighted_moments(&vals, &unit);
                    let v = stats.classes.m2[class * d + j] / stats.classes.weight[class];
                    assert!(
                        rel(v, var) < 1e-14,
                        "d={d} {level:?} class {class}: var {v} vs {var} ({:e})",
                        rel(v, var)
                    );
                }
            }
        }
    }
}

/// Distance in units in the last place between two non-negative finite floats.
fn ulps_apart(a: f64, b: f64) -> u64 {
    a.to_bits().abs_diff(b.to_bits())
}

#[test]
fn exp_nonpositive_is_within_one_ulp_of_libm() {
    use crate::simd::exp_nonpositive;
    // A dense sweep of [−746, 0] (normal and subnormal results, and the underflow edge),
    // plus the special points.
    let mut worst = [0u64; 2];
    let steps = 2_000_000;
    let sweep = (0..=steps).map(|i| -746.0 * i as f64 / steps as f64);
    let special = [
        0.0, -0.0, -1e-300, -5e-324, -1e-17, -0.5, -708.39, -708.4, -745.13, -745.2,
    ];
    for x in sweep.chain(special) {
        let reference = x.exp();
        for (k, value) in [exp_nonpositive::<true>(x), exp_nonpositive::<false>(x)]
            .into_iter()
            .enumerate()
        {
            let apart = if reference == 0.0 && value == 0.0 {
                0
            } else {
                ulps_apart(value, reference)
            };
            worst[k] = worst[k].max(apart);
        }
    }
    assert_eq!(exp_nonpositive::<true>(f64::NEG_INFINITY), 0.0);
    assert_eq!(exp_nonpositive::<false>(f64::NEG_INFINITY), 0.0);
    assert!(worst[0] <= 1 && worst[1] <= 1, "{worst:?} ulp");
}

#[test]
fn ln_1p_nonnegative_is_within_one_ulp_of_libm() {
    use crate::simd::ln_1p_nonnegative;
    let mut worst = [0u64; 2];
    let steps = 1_000_000;
    let sweep = (0..=steps).map(|i| 1e3 * (i as f64 / steps as f64).powi(3));
    let tiny = (0..2000).map(|i| 10f64.powf(-320.0 + 0.16 * i as f64));
    let special = [
        0.0,
        5e-324,
        1.1e-16,
        2.2e-16,
        0.41421356237309503,
        1.0,
        9.0,
        f64::MAX,
    ];
    for a in sweep.chain(tiny).chain(special) {
        let reference = a.ln_1p();
        for (k, value) in [ln_1p_nonnegative::<true>(a), ln_1p_nonnegative::<false>(a)]
            .into_iter()
            .enumerate()
        {
            worst[k] = worst[k].max(ulps_apart(value, reference));
        }
    }
    assert_eq!(ln_1p_nonnegative::<true>(f64::INFINITY), f64::INFINITY);
    assert!(worst[0] <= 1 && worst[1] <= 1, "{worst:?} ulp");
}

#[test]
fn statistics_with_m2_but_no_weight_are_rejected() {
    // Group 1 has weight 0 but m2 5: the next merge would drop the 5 silently.
    let err = Moments::from_parts(
        vec![2.0, 0.0],
        vec![1.0, 0.0],
        vec![0.0, 0.0],
        vec![2.0, 5.0],
        1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid parameter: statistics m2 must be 0 where weight is 0; got 5 for group 1, feature 0"
    );
    // Zero weight with zero m2 is an unseen group: valid.
    assert!(
        Moments::from_parts(
            vec![2.0, 0.0],
            vec![1.0, 0.0],
            vec![0.0; 2],
            vec![2.0, 0.0],
            1
        )
        .is_ok()
    );
}
