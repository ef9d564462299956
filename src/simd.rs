//! Runtime SIMD dispatch.
//!
//! Kernels are written once as `#[inline(always)]` generic bodies with fixed-size arrays that
//! LLVM vectorises, and instantiated inside `#[target_feature]` wrappers per level. The level is
//! detected at run time (wheels run on any x86-64; no `target-cpu=native`), can be capped with
//! the `GAUSSMLE_SIMD` environment variable (`scalar`, `avx2`, `avx512`) and forced by a test hook.

use std::sync::atomic::{AtomicU8, Ordering};

/// Environment variable that caps the SIMD level (`scalar`, `avx2`, `avx512`).
pub const SIMD_ENV: &str = "GAUSSMLE_SIMD";

/// An instruction-set level the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// Portable code; no FMA (so `mul_add` is never a slow libm call).
    Scalar = 1,
    /// x86-64-v3: AVX2 + FMA.
    Avx2 = 2,
    /// x86-64-v4: AVX-512 F/VL/DQ/BW.
    Avx512 = 3,
}

impl SimdLevel {
    /// The level's name as used by `GAUSSMLE_SIMD` and the Python API.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    /// Parse a level name (case-insensitive).
    pub fn parse(name: &str) -> Option<SimdLevel> {
        match name.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" => Some(SimdLevel::Scalar),
            "avx2" | "x86-64-v3" => Some(SimdLevel::Avx2),
            "avx512" | "avx-512" | "x86-64-v4" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }

    fn from_u8(v: u8) -> Option<SimdLevel> {
        match v {
            1 => Some(SimdLevel::Scalar),
            2 => Some(SimdLevel::Avx2),
            3 => Some(SimdLevel::Avx512),
            _ => None,
        }
    }
}

/// The best level this CPU supports.
pub fn cpu_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return SimdLevel::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Scalar
}

/// Every level this CPU can run, lowest first.
pub fn available_levels() -> Vec<SimdLevel> {
    [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512]
        .into_iter()
        .filter(|l| *l <= cpu_level())
        .collect()
}

// 0 = not decided yet; otherwise a SimdLevel discriminant.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

fn default_level() -> SimdLevel {
    let cpu = cpu_level();
    match std::env::var(SIMD_ENV)
        .ok()
        .as_deref()
        .and_then(SimdLevel::parse)
    {
        Some(cap) => cap.min(cpu),
        None => cpu,
    }
}

/// The level kernels use now.
pub fn active_level() -> SimdLevel {
    if let Some(level) = SimdLevel::from_u8(ACTIVE.load(Ordering::Relaxed)) {
        return level;
    }
    let level = default_level();
    ACTIVE.store(level as u8, Ordering::Relaxed);
    level
}

/// Test hook: force `level` (clamped to the CPU), or `None` for automatic detection.
/// Returns the level now in effect.
pub fn set_active_level(level: Option<SimdLevel>) -> SimdLevel {
    let chosen = match level {
        Some(l) => l.min(cpu_level()),
        None => default_level(),
    };
    ACTIVE.store(chosen as u8, Ordering::Relaxed);
    chosen
}

/// Multiply-add. With `FMA` it is one fused instruction (the caller is compiled with the `fma`
/// target feature); without, a separate multiply and add, because `f64::mul_add` without
/// hardware FMA is a slow libm call.
#[inline(always)]
pub fn madd<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Instantiate a generic kernel body once per SIMD level and dispatch on a [`SimdLevel`].
///
/// `dispatch!(level, body_fn::<..>(args...))` where `body_fn` takes a leading const generic
/// `FMA: bool` is not expressible directly, so kernels call this with a closure-like pattern:
/// each level gets a `#[target_feature]` wrapper defined next to the kernel.
#[macro_export]
macro_rules! simd_dispatch {
    ($level:expr, $scalar:expr, $avx2:expr, $avx512:expr) => {{
        match $level {
            #[cfg(target_arch = "x86_64")]
            $crate::simd::SimdLevel::Avx512
                if $crate::simd::cpu_level() >= $crate::simd::SimdLevel::Avx512 =>
            {
                // SAFETY: the CPU supports AVX-512F/VL/DQ/BW, AVX2 and FMA (checked at run time).
                unsafe { $avx512 }
            }
            #[cfg(target_arch = "x86_64")]
            $crate::simd::SimdLevel::Avx2 | $crate::simd::SimdLevel::Avx512
                if $crate::simd::cpu_level() >= $crate::simd::SimdLevel::Avx2 =>
            {
                // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
                unsafe { $avx2 }
            }
            _ => $scalar,
        }
    }};
}
