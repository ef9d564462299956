//! The one PyO3 glue module: NumPy arrays become ndarray views (never copies), the GIL is
//! released around every kernel, and [`GaussError`] becomes `ValueError`.

use ndarray::{Array2, ArrayView1, ArrayView2};
use numpy::{
    PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyReadwriteArray1, PyReadwriteArray2, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::error::GaussError;
use crate::labels::encode_labels_unless_codes;
use crate::score::{MatrixKind, Scorer};
use crate::simd::{self, SimdLevel};
use crate::stats::{self, FitInput, Moments};
use crate::threads;

impl From<GaussError> for PyErr {
    fn from(err: GaussError) -> PyErr {
        PyValueError::new_err(err.to_string())
    }
}

/// A float32 or float64 matrix, borrowed read-only in place.
enum Matrix<'py> {
    F64(PyReadonlyArray2<'py, f64>),
    F32(PyReadonlyArray2<'py, f32>),
}

impl Matrix<'_> {
    fn nrows(&self) -> usize {
        match self {
            Matrix::F64(a) => a.as_array().nrows(),
            Matrix::F32(a) => a.as_array().nrows(),
        }
    }
}

/// A writable float32 or float64 output matrix.
enum OutMatrix<'py> {
    F64(PyReadwriteArray2<'py, f64>),
    F32(PyReadwriteArray2<'py, f32>),
}

enum Labels<'py> {
    I64(PyReadonlyArray1<'py, i64>),
    I32(PyReadonlyArray1<'py, i32>),
}

/// `n_threads` from Python: None, or an integer (huge values are capped like any other count;
/// non-integers are a `TypeError`, not an `OverflowError`).
fn thread_count(arg: Option<&Bound<'_, PyAny>>) -> PyResult<usize> {
    let Some(obj) = arg else {
        return Ok(threads::resolve_threads(None)?);
    };
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(
            "n_threads must be an integer or None, not a bool",
        ));
    }
    match obj.extract::<i64>() {
        Ok(n) => Ok(threads::resolve_threads(Some(n))?),
        Err(_) if obj.is_instance_of::<pyo3::types::PyInt>() => {
            if obj.gt(0_i64)? {
                return Ok(threads::resolve_threads(Some(i64::MAX))?);
            }
            // Report the value given, not the i64 it would be clamped to.
            Err(PyValueError::new_err(format!(
                "invalid parameter: n_threads must be a positive integer, -1 (all cores) or None; \
                 got {}",
                obj.str()?
            )))
        }
        Err(_) => Err(PyTypeError::new_err(format!(
            "n_threads must be an integer or None; got {}",
            obj.get_type().name()?
        ))),
    }
}

fn require_aligned(aligned: bool, name: &str) -> PyResult<()> {
    if aligned {
        Ok(())
    } else {
        // A typed read through an unaligned pointer is undefined behaviour; the Python layer
        // makes one aligned copy before calling in.
        Err(PyValueError::new_err(format!(
            "{name} is not aligned; pass it through the gaussmle Python API, which aligns it"
        )))
    }
}

fn borrow_error(name: &str) -> PyErr {
    PyValueError::new_err(format!(
        "{name} is not writable, or overlaps an array that is being written (another argument, \
         or an output of a call still running in another thread)"
    ))
}

/// Whether an array's elements overlap each other (zero or too-small strides, as
/// `np.lib.stride_tricks.as_strided` makes): writing such an `out` from several threads is a
/// data race, and its values would depend on the order of the writes. Nested strides (each at
/// least the span of the smaller ones) are disjoint; other 2-D layouts are checked exactly.
fn self_overlapping(shape: &[usize], strides: &[isize], itemsize: usize) -> bool {
    if shape.contains(&0) {
        return false;
    }
    let mut dims: Vec<(usize, usize)> = shape
        .iter()
        .zip(strides)
        .filter(|(len, _)| **len > 1)
        .map(|(&len, &stride)| (stride.unsigned_abs(), len))
        .collect();
    dims.sort_unstable();
    let mut span = itemsize;
    let nested = dims.iter().all(|&(stride, len)| {
        let ok = stride >= span;
        span = stride.saturating_mul(len);
        ok
    });
    match dims[..] {
        _ if nested => false,
        [(s0, n0), (s1, n1)] => interleaved_overlap((s0, n0), (s1, n1), itemsize),
        _ => true,
    }
}

/// Exact test for two dimensions whose strides interleave (e.g. strides (16, 24) for 2 × 2
/// items of 8 bytes): is there a step `(di, dj) ≠ 0` within the shape with
/// `|di·s0 + dj·s1| < itemsize`? One pass over the shorter dimension; `dj` runs over a
/// symmetric range, so only the magnitudes of the strides matter.
fn interleaved_overlap(a: (usize, usize), b: (usize, usize), itemsize: usize) -> bool {
    let ((s_outer, n_outer), (s_inner, n_inner)) = if a.1 <= b.1 { (a, b) } else { (b, a) };
    let (s0, s1, w) = (s_outer as i128, s_inner as i128, itemsize as i128 - 1);
    let reach = n_inner as i128 - 1;
    if s1 == 0 {
        return true;
    }
    (0..n_outer as i128).any(|di| {
        let base = di * s0;
        // dj with −w ≤ base + dj·s1 ≤ w.
        let lo = (-w - base).div_euclid(s1) + i128::from((-w - base).rem_euclid(s1) != 0);
        let hi = (w - base).div_euclid(s1);
        let (lo, hi) = (lo.max(-reach), hi.min(reach));
        lo <= hi && (di != 0 || lo != 0 || hi != 0)
    })
}

fn require_disjoint_elements(a: &Bound<'_, PyUntypedArray>) -> PyResult<()> {
    let itemsize = a.dtype().itemsize();
    if self_overlapping(a.shape(), a.strides(), itemsize) {
        return Err(PyValueError::new_err(format!(
            "out has overlapping elements (shape {:?}, strides {:?}); pass an array whose \
             elements are distinct, such as one from np.empty",
            a.shape(),
            a.strides()
        )));
    }
    Ok(())
}

fn matrix<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Matrix<'py>> {
    if let Ok(a) = obj.cast::<PyArray2<f64>>() {
        require_aligned(a.is_aligned(), name)?;
        return a
            .try_readonly()
            .map(Matrix::F64)
            .map_err(|_| borrow_error(name));
    }
    if let Ok(a) = obj.cast::<PyArray2<f32>>() {
        require_aligned(a.is_aligned(), name)?;
        return a
            .try_readonly()
            .map(Matrix::F32)
            .map_err(|_| borrow_error(name));
    }
    check_2d(obj, name)?;
    Err(PyTypeError::new_err(format!(
        "{name} must be a 2-D numpy array of float32 or float64 in native byte order"
    )))
}

/// A numpy array of another rank is a `ValueError`, as in the function API (the wrong dtype or
/// type stays a `TypeError`).
fn check_2d(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<()> {
    match obj.cast::<PyUntypedArray>() {
        Ok(a) if a.ndim() != 2 => Err(PyValueError::new_err(format!(
            "{name} must be a 2-D array; got {}-D",
            a.ndim()
        ))),
        _ => Ok(()),
    }
}

fn out_matrix<'py>(obj: &Bound<'py, PyAny>) -> PyResult<OutMatrix<'py>> {
    if let Ok(a) = obj.cast::<PyArray2<f64>>() {
        require_aligned(a.is_aligned(), "out")?;
        require_disjoint_elements(a.as_untyped())?;
        return a
            .try_readwrite()
            .map(OutMatrix::F64)
            .map_err(|_| borrow_error("out"));
    }
    if let Ok(a) = obj.cast::<PyArray2<f32>>() {
        require_aligned(a.is_aligned(), "out")?;
        require_disjoint_elements(a.as_untyped())?;
        return a
            .try_readwrite()
            .map(OutMatrix::F32)
            .map_err(|_| borrow_error("out"));
    }
    check_2d(obj, "out")?;
    Err(PyTypeError::new_err(
        "out must be a writable 2-D numpy array of float32 or float64 in native byte order",
    ))
}

fn labels<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Labels<'py>> {
    if let Ok(a) = obj.cast::<PyArray1<i64>>() {
        require_aligned(a.is_aligned(), "labels")?;
        return a
            .try_readonly()
            .map(Labels::I64)
            .map_err(|_| borrow_error("labels"));
    }
    if let Ok(a) = obj.cast::<PyArray1<i32>>() {
        require_aligned(a.is_aligned(), "labels")?;
        return a
            .try_readonly()
            .map(Labels::I32)
            .map_err(|_| borrow_error("labels"));
    }
    Err(PyTypeError::new_err(
        "labels must be a 1-D numpy array of int32 or int64",
    ))
}

fn f64_vector<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<PyReadonlyArray1<'py, f64>> {
    let a = obj
        .cast::<PyArray1<f64>>()
        .map_err(|_| PyTypeError::new_err(format!("{name} must be a 1-D float64 numpy array")))?;
    require_aligned(a.is_aligned(), name)?;
    a.try_readonly().map_err(|_| borrow_error(name))
}

fn f64_matrix<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<PyReadonlyArray2<'py, f64>> {
    let a = obj
        .cast::<PyArray2<f64>>()
        .map_err(|_| PyTypeError::new_err(format!("{name} must be a 2-D float64 numpy array")))?;
    require_aligned(a.is_aligned(), name)?;
    a.try_readonly().map_err(|_| borrow_error(name))
}

fn to_matrix<'py>(
    py: Python<'py>,
    values: Vec<f64>,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let arr = Array2::from_shape_vec((rows, cols), values)
        .map_err(|e| PyValueError::new_err(format!("internal shape error: {e}")))?;
    Ok(PyArray2::from_owned_array(py, arr))
}

/// `(weight, mean, mean_lo, m2)` of every group.
type MomentsTuple<'py> = (
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray2<f64>>,
    Bound<'py, PyArray2<f64>>,
    Bound<'py, PyArray2<f64>>,
);

fn moments_tuple(py: Python<'_>, m: Moments) -> PyResult<MomentsTuple<'_>> {
    let (g, d) = (m.n_groups, m.n_features);
    Ok((
        PyArray1::from_vec(py, m.weight),
        to_matrix(py, m.mean, g, d)?,
        to_matrix(py, m.mean_lo, g, d)?,
        to_matrix(py, m.m2, g, d)?,
    ))
}

fn fit<E: crate::element::Element + numpy::Element>(
    py: Python<'_>,
    x: ArrayView2<'_, E>,
    y: &Labels<'_>,
    weights: Option<ArrayView1<'_, f64>>,
    n_classes: usize,
    n_threads: usize,
) -> Result<stats::ClassStats, GaussError> {
    let level = simd::active_level();
    match y {
        Labels::I64(l) => {
            let input = FitInput {
                x,
                labels: l.as_array(),
                weights,
                n_classes,
            };
            py.detach(|| stats::class_stats(input, n_threads, level))
        }
        Labels::I32(l) => {
            let input = FitInput {
                x,
                labels: l.as_array(),
                weights,
                n_classes,
            };
            py.detach(|| stats::class_stats(input, n_threads, level))
        }
    }
}

#[pyfunction]
#[pyo3(signature = (x, labels, n_classes, sample_weight=None, n_threads=None))]
fn class_stats<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    labels: &Bound<'py, PyAny>,
    n_classes: usize,
    sample_weight: Option<&Bound<'py, PyAny>>,
    n_threads: Option<&Bound<'py, PyAny>>,
) -> PyResult<(MomentsTuple<'py>, MomentsTuple<'py>)> {
    let n_threads = thread_count(n_threads)?;
    let x = matrix(x, "X")?;
    let y = self::labels(labels)?;
    let w = sample_weight
        .map(|w| f64_vector(w, "sample_weight"))
        .transpose()?;
    let w_view = w.as_ref().map(|w| w.as_array());
    let result = match &x {
        Matrix::F64(a) => fit(py, a.as_array(), &y, w_view, n_classes, n_threads)?,
        Matrix::F32(a) => fit(py, a.as_array(), &y, w_view, n_classes, n_threads)?,
    };
    Ok((
        moments_tuple(py, result.classes)?,
        moments_tuple(py, result.global)?,
    ))
}

/// Statistics from Python: a tuple `(weight, mean, mean_lo, m2)` of float64 arrays.
fn moments(parts: &Bound<'_, PyAny>) -> PyResult<Moments> {
    type Parts<'py> = (
        Bound<'py, PyAny>,
        Bound<'py, PyAny>,
        Bound<'py, PyAny>,
        Bound<'py, PyAny>,
    );
    let (weight, mean, mean_lo, m2): Parts<'_> = parts.extract().map_err(|_| {
        PyTypeError::new_err("statistics must be a tuple (weight, mean, mean_lo, m2)")
    })?;
    let weight = f64_vector(&weight, "weight")?;
    let mean = f64_matrix(&mean, "mean")?;
    let mean_lo = f64_matrix(&mean_lo, "mean_lo")?;
    let m2 = f64_matrix(&m2, "m2")?;
    let dim = mean.as_array().dim();
    if m2.as_array().dim() != dim || mean_lo.as_array().dim() != dim {
        return Err(PyValueError::new_err(
            "mean, mean_lo and m2 must have the same shape",
        ));
    }
    let flat = |a: &PyReadonlyArray2<'_, f64>| a.as_array().iter().copied().collect::<Vec<f64>>();
    Ok(Moments::from_parts(
        weight.as_array().to_vec(),
        flat(&mean),
        flat(&mean_lo),
        flat(&m2),
        dim.1,
    )?)
}

/// Validate a statistics tuple `(weight, mean, mean_lo, m2)` as `merge_stats` does.
#[pyfunction]
fn check_stats(parts: &Bound<'_, PyAny>) -> PyResult<()> {
    moments(parts).map(|_| ())
}

/// Exact merge of two statistics tuples `(weight, mean, mean_lo, m2)`.
#[pyfunction]
fn merge_stats<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
) -> PyResult<MomentsTuple<'py>> {
    let merged = stats::merge_stats(&moments(a)?, &moments(b)?)?;
    moments_tuple(py, merged)
}

/// `(classes, codes)` as int64 arrays.
type EncodedLabels<'py> = (Bound<'py, PyArray1<i64>>, Option<Bound<'py, PyArray1<i64>>>);

#[pyfunction]
fn encode_labels<'py>(py: Python<'py>, labels: &Bound<'py, PyAny>) -> PyResult<EncodedLabels<'py>> {
    let y = self::labels(labels)?;
    let (classes, codes) = match &y {
        Labels::I64(l) => {
            let v = l.as_array();
            py.detach(|| encode_labels_unless_codes(v))
        }
        Labels::I32(l) => {
            let v = l.as_array();
            py.detach(|| encode_labels_unless_codes(v))
        }
    };
    Ok((
        PyArray1::from_vec(py, classes),
        codes.map(|codes| PyArray1::from_vec(py, codes)),
    ))
}

#[pyfunction]
fn simd_level() -> &'static str {
    simd::active_level().name()
}

#[pyfunction]
#[pyo3(signature = (level))]
fn set_simd_level(level: Option<&str>) -> PyResult<&'static str> {
    let parsed = match level {
        None => None,
        Some(name) => Some(SimdLevel::parse(name).ok_or_else(|| {
            PyValueError::new_err(format!(
                "unknown SIMD level {name:?}; expected 'scalar', 'avx2' or 'avx512'"
            ))
        })?),
    };
    Ok(simd::set_active_level(parsed).name())
}

/// Why `GAUSSMLE_SIMD` is ignored (set, not empty, and not a level name), or `None`.
#[pyfunction]
fn simd_env_problem() -> Option<String> {
    // A value that is not UTF-8 is not a level name either.
    let value = std::env::var_os(simd::SIMD_ENV)?
        .to_string_lossy()
        .into_owned();
    if value.trim().is_empty() || SimdLevel::parse(&value).is_some() {
        return None;
    }
    Some(format!(
        "{}={value:?} is not a SIMD level ('scalar', 'avx2' or 'avx512') and is ignored: the \
         kernels use the widest level this CPU supports",
        simd::SIMD_ENV
    ))
}

#[pyfunction]
fn available_simd_levels() -> Vec<&'static str> {
    simd::available_levels()
        .into_iter()
        .map(SimdLevel::name)
        .collect()
}

/// All cores this process may use (what `n_threads=-1` means), whatever
/// `GAUSSMLE_NUM_THREADS` says.
#[pyfunction]
fn available_cores() -> usize {
    threads::all_cores()
}

#[pyfunction]
fn default_n_threads() -> PyResult<usize> {
    Ok(threads::default_threads()?)
}

/// Precomputed diagonal-Gaussian scoring parameters (immutable, thread-safe).
#[pyclass(frozen, module = "gaussmle._core")]
struct GaussianScorer {
    inner: Scorer,
}

impl GaussianScorer {
    fn matrix_output<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        out: Option<&Bound<'py, PyAny>>,
        n_threads: Option<&Bound<'py, PyAny>>,
        kind: MatrixKind,
    ) -> PyResult<Bound<'py, PyAny>> {
        let n_threads = thread_count(n_threads)?;
        let level = simd::active_level();
        let xm = matrix(x, "X")?;
        let n_rows = xm.nrows();
        let dims = [n_rows, self.inner.n_classes()];
        let out_obj: Bound<'py, PyAny> = match out {
            Some(o) => o.clone(),
            // SAFETY: every element is written by `score_into` before the array is returned; on
            // error the array is dropped unseen. NumPy allocates it (huge-page advice included).
            None => match &xm {
                Matrix::F64(_) => unsafe { PyArray2::<f64>::new(py, dims, false) }.into_any(),
                Matrix::F32(_) => unsafe { PyArray2::<f32>::new(py, dims, false) }.into_any(),
            },
        };
        let mut om = out_matrix(&out_obj)?;
        let scorer = &self.inner;
        // Views are built before `detach` (they are Send; the Python objects are not).
        macro_rules! score {
            ($x:expr, $o:expr) => {{
                let (xv, ov) = ($x.as_array(), $o.as_array_mut());
                py.detach(|| scorer.score_into(xv, ov, kind, n_threads, level))?
            }};
        }
        match (&xm, &mut om) {
            (Matrix::F64(a), OutMatrix::F64(o)) => score!(a, o),
            (Matrix::F64(a), OutMatrix::F32(o)) => score!(a, o),
            (Matrix::F32(a), OutMatrix::F64(o)) => score!(a, o),
            (Matrix::F32(a), OutMatrix::F32(o)) => score!(a, o),
        }
        drop(om);
        Ok(out_obj)
    }
}

#[pymethods]
impl GaussianScorer {
    #[new]
    fn new(
        mean: &Bound<'_, PyAny>,
        var: &Bound<'_, PyAny>,
        log_prior: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let mean = f64_matrix(mean, "mean")?;
        let var = f64_matrix(var, "var")?;
        let log_prior = f64_vector(log_prior, "log_prior")?;
        let inner = Scorer::new(mean.as_array(), var.as_array(), log_prior.as_array())?;
        Ok(GaussianScorer { inner })
    }

    #[getter]
    fn n_classes(&self) -> usize {
        self.inner.n_classes()
    }

    #[getter]
    fn n_features(&self) -> usize {
        self.inner.n_features()
    }

    #[pyo3(signature = (x, out=None, n_threads=None))]
    fn joint_log_likelihood<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        out: Option<&Bound<'py, PyAny>>,
        n_threads: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.matrix_output(py, x, out, n_threads, MatrixKind::JointLogLikelihood)
    }

    #[pyo3(signature = (x, out=None, n_threads=None))]
    fn log_proba<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        out: Option<&Bound<'py, PyAny>>,
        n_threads: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.matrix_output(py, x, out, n_threads, MatrixKind::LogProba)
    }

    #[pyo3(signature = (x, out=None, n_threads=None))]
    fn proba<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        out: Option<&Bound<'py, PyAny>>,
        n_threads: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.matrix_output(py, x, out, n_threads, MatrixKind::Proba)
    }

    #[pyo3(signature = (x, out=None, n_threads=None))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        out: Option<&Bound<'py, PyAny>>,
        n_threads: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let n_threads = thread_count(n_threads)?;
        let level = simd::active_level();
        let xm = matrix(x, "X")?;
        let n_rows = xm.nrows();
        let out_arr: Bound<'py, PyArray1<i64>> = match out {
            Some(o) => o
                .cast::<PyArray1<i64>>()
                .map_err(|_| PyTypeError::new_err("out must be a writable 1-D int64 numpy array"))?
                .clone(),
            // SAFETY: `predict_into` writes every element before the array is returned.
            None => unsafe { PyArray1::<i64>::new(py, [n_rows], false) },
        };
        require_aligned(out_arr.is_aligned(), "out")?;
        require_disjoint_elements(out_arr.as_untyped())?;
        let mut ow: PyReadwriteArray1<'py, i64> =
            out_arr.try_readwrite().map_err(|_| borrow_error("out"))?;
        let scorer = &self.inner;
        match &xm {
            Matrix::F64(a) => {
                let (xv, ov) = (a.as_array(), ow.as_array_mut());
                py.detach(|| scorer.predict_into(xv, ov, n_threads, level))?
            }
            Matrix::F32(a) => {
                let (xv, ov) = (a.as_array(), ow.as_array_mut());
                py.detach(|| scorer.predict_into(xv, ov, n_threads, level))?
            }
        }
        drop(ow);
        Ok(out_arr)
    }
}

/// The compiled core of gaussmle (see `gaussmle/_core.pyi` for the typed API).
#[pymodule]
mod _core {
    #[pymodule_export]
    use super::{
        GaussianScorer, available_cores, available_simd_levels, check_stats, class_stats,
        default_n_threads, encode_labels, merge_stats, set_simd_level, simd_env_problem,
        simd_level,
    };

    #[pymodule_export]
    #[allow(non_upper_case_globals)]
    const __version__: &str = env!("CARGO_PKG_VERSION");
}
