//! The core's one error type. Every failure of the pure-Rust kernels is a value of
//! [`GaussError`]; the Python glue maps each variant to `ValueError` or `TypeError`.

use std::fmt;

/// What went wrong, with enough position information for a user to find the bad input.
#[derive(Debug, Clone, PartialEq)]
pub enum GaussError {
    /// A NaN or ±inf in the data matrix, at (row, column).
    NonFinite {
        what: &'static str,
        row: usize,
        col: usize,
        value: f64,
    },
    /// A class label outside `0..n_classes`.
    LabelOutOfRange {
        row: usize,
        label: i64,
        n_classes: usize,
    },
    /// A sample weight that is negative, NaN or infinite.
    BadWeight { row: usize, value: f64 },
    /// Two inputs whose shapes must agree do not.
    ShapeMismatch { what: String },
    /// A variance that is zero, negative or not finite cannot define a Gaussian.
    BadVariance {
        class: usize,
        feature: usize,
        value: f64,
    },
    /// A model parameter that is NaN or infinite where that is not allowed.
    BadParameter { what: String },
    /// Finite input whose statistics exceed the float64 range.
    Overflow { what: String },
    /// Every class has zero likelihood for a row (the squared distances overflow).
    NoFiniteLikelihood { row: usize },
}

impl fmt::Display for GaussError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GaussError::NonFinite {
                what,
                row,
                col,
                value,
            } => {
                let kind = if value.is_nan() { "NaN" } else { "infinity" };
                write!(
                    f,
                    "Input {what} contains {kind} (value {value} at row {row}, column {col}); \
                     remove or impute non-finite values first"
                )
            }
            GaussError::LabelOutOfRange {
                row,
                label,
                n_classes,
            } if *n_classes == 0 => write!(
                f,
                "label {label} at row {row} is out of range: there are no classes (n_classes = 0)"
            ),
            GaussError::LabelOutOfRange {
                row,
                label,
                n_classes,
            } => write!(
                f,
                "label {label} at row {row} is out of range: class codes must be between 0 and \
                 {} (n_classes = {n_classes})",
                n_classes - 1
            ),
            GaussError::BadWeight { row, value } => write!(
                f,
                "sample_weight must be finite and non-negative; got {value} at row {row}"
            ),
            GaussError::ShapeMismatch { what } => write!(f, "shape mismatch: {what}"),
            GaussError::BadVariance {
                class,
                feature,
                value,
            } => write!(
                f,
                "variance must be finite and > 0; got {value} for class {class}, feature \
                 {feature} (a feature constant within a class has variance 0: add a small \
                 variance, as GaussianNB's var_smoothing does)"
            ),
            GaussError::BadParameter { what } => write!(f, "invalid parameter: {what}"),
            GaussError::Overflow { what } => write!(
                f,
                "{what} overflows float64; rescale the data (for example divide it by a \
                 constant) before fitting"
            ),
            GaussError::NoFiniteLikelihood { row } => write!(
                f,
                "row {row} has zero likelihood under every class (its squared distance to \
                 every mean overflows float64)"
            ),
        }
    }
}

impl std::error::Error for GaussError {}

/// Result alias for the core.
pub type Result<T> = std::result::Result<T, GaussError>;
