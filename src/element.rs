//! The two float types the kernels read in place, and the integer label types.

/// A float the kernels read without converting the array: `f32` or `f64`.
/// Accumulation is always in `f64`.
pub trait Element: Copy + Send + Sync + 'static {
    /// Exact widening (or identity) to f64.
    fn to_f64(self) -> f64;
    /// Round a float64 result to this type (round-to-nearest).
    fn from_f64(v: f64) -> Self;
}

impl Element for f64 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
}

impl Element for f32 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

/// An integer class label: `i32` or `i64`.
pub trait Label: Copy + Send + Sync + 'static {
    /// Widen to i64.
    fn to_i64(self) -> i64;
}

impl Label for i64 {
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self
    }
}

impl Label for i32 {
    #[inline(always)]
    fn to_i64(self) -> i64 {
        i64::from(self)
    }
}
