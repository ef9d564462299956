//! Runtime SIMD dispatch.
//!
//! Kernels are written once as `#[inline(always)]` generic bodies with fixed-size arrays that
//! LLVM vectorises, and instantiated inside `#[target_feature]` wrappers per level. The level is
//! detected at run time (wheels run on any x86-64; no `target-cpu=native`), can be capped with
//! the `GAUSSMLE_SIMD` environment variable (`scalar`, `avx2`, `avx512`) and forced by a test hook.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::element::Element;

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

/// Hint the CPU to fetch the cache line holding `p` into L1 (a no-op off x86-64). Never
/// faults, so `p` may point anywhere (callers compute it with `wrapping_*`).
#[inline(always)]
pub fn prefetch_read<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is SSE (baseline on x86-64) and never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hint the CPU to fetch the cache line holding `p` into L2 (a no-op off x86-64): for data
/// needed a few microseconds later. Never faults, so `p` may point anywhere.
#[inline(always)]
pub fn prefetch_l2<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT1 is SSE (baseline on x86-64) and never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
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
/// The AVX arms are expressions of the form `unsafe { wrapper(args) }`: the macro evaluates
/// each only when the CPU supports its features, which is the wrappers' safety condition.
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
                // The arm runs only when the CPU supports AVX-512F/VL/DQ/BW, AVX2 and FMA; the
                // caller's `unsafe` block around the call relies on this guard.
                $avx512
            }
            #[cfg(target_arch = "x86_64")]
            $crate::simd::SimdLevel::Avx2 | $crate::simd::SimdLevel::Avx512
                if $crate::simd::cpu_level() >= $crate::simd::SimdLevel::Avx2 =>
            {
                // Runs only when the CPU supports AVX2 and FMA.
                $avx2
            }
            _ => $scalar,
        }
    }};
}

/// f64 vectors of one SIMD level, for kernels that block registers explicitly.
///
/// Every method is `#[inline(always)]`: a generic kernel body over `L: Lanes` is monomorphised
/// and inlined whole into a `#[target_feature]` function of the matching level, so the
/// intrinsics are compiled with that level's features. Methods are `unsafe` because the
/// caller must run on a CPU with the level's features and pass pointers to `LANES` readable
/// (or writable) f64 values.
///
/// # Safety
///
/// Every method requires the CPU to support the level (checked once by the dispatch) and its
/// pointer arguments to address `LANES` valid elements; the contract is stated here once.
#[allow(clippy::missing_safety_doc)]
pub trait Lanes: Copy + Send + Sync + 'static {
    /// One vector register.
    type V: Copy;
    /// f64 values per vector.
    const LANES: usize;
    /// Whether `fmadd` is one fused instruction.
    const FMA: bool;
    /// Every lane set to `v`.
    unsafe fn splat(v: f64) -> Self::V;
    /// Unaligned load of `LANES` values.
    unsafe fn load(p: *const f64) -> Self::V;
    /// Unaligned store of `LANES` values.
    unsafe fn store(p: *mut f64, v: Self::V);
    /// `a − b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b + c` (fused with FMA, else two roundings).
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a · b − c` (fused with FMA, else two roundings).
    unsafe fn fmsub(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Unaligned load of `LANES` f32 values, widened exactly to f64.
    unsafe fn load_f32(p: *const f32) -> Self::V;
    /// Transpose the `LANES × LANES` block held in `v[..LANES]` (row `i` becomes column `i`).
    unsafe fn transpose(v: &mut [Self::V]);
    /// Whether [`Lanes::regroup`] is implemented (it needs a two-source cross-lane permute,
    /// which only the AVX-512 level has; callers check this constant first).
    const REGROUP: bool = false;
    /// Transpose between `LANES` rows of `N ≤ 4` values stored row after row (`N` vectors,
    /// value `e` of the run in lane `e % LANES` of vector `e / LANES`) and `N` columns (vector
    /// `k` holds value `k` of every row): `TO_COLUMNS` goes from the first to the second, else
    /// back. The narrow-row counterpart of [`Lanes::transpose`], for few features or classes.
    unsafe fn regroup<const N: usize, const TO_COLUMNS: bool>(v: [Self::V; N]) -> [Self::V; N] {
        let _ = v;
        unreachable!("regroup is only called where Lanes::REGROUP is true")
    }
}

/// For [`Lanes::regroup`] at 8 lanes: per output vector, the `vpermt2pd` index of each lane
/// into source vectors `(0, 1)` (or `(2, 3)`, the same index) and the mask of lanes taken from
/// vectors 2 or 3.
const fn regroup_plan<const N: usize, const TO_COLUMNS: bool>() -> [([i64; 8], u8); N] {
    let mut plan = [([0i64; 8], 0u8); N];
    let mut m = 0;
    while m < N {
        let mut lane = 0;
        while lane < 8 {
            // Flat position in the row-after-row run of the value this output lane holds.
            let (vector, source_lane) = if TO_COLUMNS {
                let e = lane * N + m; // row `lane`, column `m`
                (e / 8, e % 8)
            } else {
                let e = m * 8 + lane; // row e / N, column e % N (vector = column)
                (e % N, e / N)
            };
            plan[m].0[lane] = (source_lane + 8 * (vector % 2)) as i64;
            if vector >= 2 {
                plan[m].1 |= 1 << lane;
            }
            lane += 1;
        }
        m += 1;
    }
    plan
}

/// Portable level: one f64 per "vector", no FMA.
#[derive(Clone, Copy, Debug)]
pub struct ScalarLanes;

impl Lanes for ScalarLanes {
    type V = f64;
    const LANES: usize = 1;
    const FMA: bool = false;
    #[inline(always)]
    unsafe fn splat(v: f64) -> f64 {
        v
    }
    #[inline(always)]
    unsafe fn load(p: *const f64) -> f64 {
        // SAFETY: the caller guarantees `p` is readable.
        unsafe { p.read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f64, v: f64) {
        // SAFETY: the caller guarantees `p` is writable.
        unsafe { p.write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn sub(a: f64, b: f64) -> f64 {
        a - b
    }
    #[inline(always)]
    unsafe fn add(a: f64, b: f64) -> f64 {
        a + b
    }
    #[inline(always)]
    unsafe fn mul(a: f64, b: f64) -> f64 {
        a * b
    }
    #[inline(always)]
    unsafe fn fmadd(a: f64, b: f64, c: f64) -> f64 {
        a * b + c
    }
    #[inline(always)]
    unsafe fn fmsub(a: f64, b: f64, c: f64) -> f64 {
        a * b - c
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> f64 {
        // SAFETY: the caller guarantees `p` is readable.
        f64::from(unsafe { p.read_unaligned() })
    }
    #[inline(always)]
    unsafe fn transpose(_v: &mut [f64]) {}
}

/// AVX2 + FMA: four f64 per `__m256d`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub struct Avx2Lanes;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2Lanes {
    type V = std::arch::x86_64::__m256d;
    const LANES: usize = 4;
    const FMA: bool = true;
    #[inline(always)]
    unsafe fn splat(v: f64) -> Self::V {
        // SAFETY (all methods): the caller runs with AVX2+FMA and valid pointers.
        unsafe { std::arch::x86_64::_mm256_set1_pd(v) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f64) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_loadu_pd(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f64, v: Self::V) {
        unsafe { std::arch::x86_64::_mm256_storeu_pd(p, v) }
    }
    #[inline(always)]
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_sub_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_add_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_mul_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_fmadd_pd(a, b, c) }
    }
    #[inline(always)]
    unsafe fn fmsub(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_fmsub_pd(a, b, c) }
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm256_cvtps_pd(std::arch::x86_64::_mm_loadu_ps(p)) }
    }
    #[inline(always)]
    unsafe fn transpose(v: &mut [Self::V]) {
        use std::arch::x86_64::_mm256_unpacklo_pd as lo;
        use std::arch::x86_64::{_mm256_permute2f128_pd as cross, _mm256_unpackhi_pd as hi};
        unsafe {
            let (t0, t1) = (lo(v[0], v[1]), hi(v[0], v[1]));
            let (t2, t3) = (lo(v[2], v[3]), hi(v[2], v[3]));
            v[0] = cross::<0x20>(t0, t2);
            v[1] = cross::<0x20>(t1, t3);
            v[2] = cross::<0x31>(t0, t2);
            v[3] = cross::<0x31>(t1, t3);
        }
    }
}

/// AVX-512F: eight f64 per `__m512d`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub struct Avx512Lanes;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512Lanes {
    type V = std::arch::x86_64::__m512d;
    const LANES: usize = 8;
    const FMA: bool = true;
    #[inline(always)]
    unsafe fn splat(v: f64) -> Self::V {
        // SAFETY (all methods): the caller runs with AVX-512F and valid pointers.
        unsafe { std::arch::x86_64::_mm512_set1_pd(v) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f64) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_loadu_pd(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f64, v: Self::V) {
        unsafe { std::arch::x86_64::_mm512_storeu_pd(p, v) }
    }
    #[inline(always)]
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_sub_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_add_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_mul_pd(a, b) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_fmadd_pd(a, b, c) }
    }
    #[inline(always)]
    unsafe fn fmsub(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_fmsub_pd(a, b, c) }
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const f32) -> Self::V {
        unsafe { std::arch::x86_64::_mm512_cvtps_pd(std::arch::x86_64::_mm256_loadu_ps(p)) }
    }
    #[inline(always)]
    unsafe fn transpose(v: &mut [Self::V]) {
        use std::arch::x86_64::_mm512_unpacklo_pd as lo;
        use std::arch::x86_64::{_mm512_shuffle_f64x2 as lanes, _mm512_unpackhi_pd as hi};
        unsafe {
            // Pairs within 128-bit lanes, then 128-bit lanes across pairs of rows, then across
            // quads of rows.
            let t = [
                lo(v[0], v[1]),
                hi(v[0], v[1]),
                lo(v[2], v[3]),
                hi(v[2], v[3]),
                lo(v[4], v[5]),
                hi(v[4], v[5]),
                lo(v[6], v[7]),
                hi(v[6], v[7]),
            ];
            let u = [
                lanes::<0x88>(t[0], t[2]),
                lanes::<0x88>(t[1], t[3]),
                lanes::<0xdd>(t[0], t[2]),
                lanes::<0xdd>(t[1], t[3]),
                lanes::<0x88>(t[4], t[6]),
                lanes::<0x88>(t[5], t[7]),
                lanes::<0xdd>(t[4], t[6]),
                lanes::<0xdd>(t[5], t[7]),
            ];
            for i in 0..4 {
                v[i] = lanes::<0x88>(u[i], u[i + 4]);
                v[i + 4] = lanes::<0xdd>(u[i], u[i + 4]);
            }
        }
    }
    const REGROUP: bool = true;
    #[inline(always)]
    unsafe fn regroup<const N: usize, const TO_COLUMNS: bool>(v: [Self::V; N]) -> [Self::V; N] {
        use std::arch::x86_64::{_mm512_loadu_epi64, _mm512_mask_blend_pd, _mm512_permutex2var_pd};
        const { assert!(N >= 1 && N <= 4) };
        let plan = const { regroup_plan::<N, TO_COLUMNS>() };
        // SAFETY: register permutes; the index arrays hold 8 values.
        unsafe {
            std::array::from_fn(|m| {
                let (index, high) = &plan[m];
                let idx = _mm512_loadu_epi64(index.as_ptr());
                let low = _mm512_permutex2var_pd(v[0], idx, v[1 % N]);
                if N <= 2 {
                    low
                } else {
                    let upper = _mm512_permutex2var_pd(v[2 % N], idx, v[(N - 1).min(3)]);
                    _mm512_mask_blend_pd(*high, low, upper)
                }
            })
        }
    }
}

/// `exp(x)` for `x ≤ 0` (or −inf), branch-free so that loops over it vectorise.
///
/// Cody–Waite reduction `x = k·ln2 + r`, `|r| ≤ ln2/2`, then the degree-13 Taylor polynomial
/// (truncation < 5e-18 relative) by Horner, then scaling by `2^k` in two exact-or-once-rounded
/// steps so that subnormal results are rounded once. Error ≤ 2 ulp (within 1 ulp of libm's
/// `exp` over a sweep of [−746, 0], with and without FMA: `exp_nonpositive_is_within_one_ulp_of_libm`);
/// exactly 0 below −745.2, where exp underflows to 0.
#[inline(always)]
pub fn exp_nonpositive<const FMA: bool>(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    // ln 2 split so that k·LN2_HI is exact for |k| < 2^11.
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // 1.5·2^52: adding it rounds to an integer held in the low mantissa bits.
    const SHIFTER: f64 = 6_755_399_441_055_744.0;
    let xc = if x > -746.0 { x } else { -746.0 };
    let t = madd::<FMA>(xc, LOG2E, SHIFTER);
    let kf = t - SHIFTER;
    let k = (t.to_bits() as i64).wrapping_sub(SHIFTER.to_bits() as i64);
    let r = madd::<FMA>(-kf, LN2_HI, xc);
    let r = madd::<FMA>(-kf, LN2_LO, r);
    let mut p = 1.0 / 6_227_020_800.0;
    for c in [
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = madd::<FMA>(p, r, c);
    }
    // 2^k = 2^k1 · 2^k2 with both factors normal for k ≥ −1076.
    let k1 = k >> 1;
    let k2 = k - k1;
    let s1 = f64::from_bits(((k1 + 1023) as u64) << 52);
    let s2 = f64::from_bits(((k2 + 1023) as u64) << 52);
    let y = p * s1 * s2;
    if x > -745.2 { y } else { 0.0 }
}

/// `ln(1 + a)` for `a ≥ 0` (finite or +inf), branch-free so that loops over it vectorise
/// (libm's `ln_1p` is a call per value, which made log-probabilities cost twice the
/// probabilities at d = 2).
///
/// `1 + a = u + c` exactly (Fast2Sum), `u = 2^k·m` with `m ∈ [√½, √2)`, and
/// `ln(1 + a) = k·ln 2 + ln m + c/u` with `ln m = f − (f²/2 − s·(f²/2 + R(s²)))`, `f = m − 1`
/// (exact), `s = f/(2 + f)` and `R` the atanh series to `s²⁰` (truncation < 0.3 ulp), the
/// arrangement of fdlibm's `log1p`. Within 1 ulp of libm over a sweep of [0, 1e3] and tiny
/// arguments (`ln_1p_nonnegative_is_within_one_ulp_of_libm`).
#[inline(always)]
pub fn ln_1p_nonnegative<const FMA: bool>(a: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // Bits of √½: adding (1.0 − √½) to u's bits moves the exponent boundary to √½.
    const SQRT_HALF_BITS: u64 = 0x3fe6_a09e_667f_3bcd;
    const ONE_BITS: u64 = 0x3ff0_0000_0000_0000;
    let (big, small) = (a.max(1.0), a.min(1.0));
    let u = big + small;
    let c = (big - u) + small;
    let shifted = u.to_bits().wrapping_add(ONE_BITS - SQRT_HALF_BITS);
    let k = ((shifted >> 52) as i64 - 1023) as f64;
    let m = f64::from_bits((shifted & 0x000f_ffff_ffff_ffff).wrapping_add(SQRT_HALF_BITS));
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    // R(z) = Σ_{i=1}^{10} 2 z^i / (2i + 1).
    let mut r = 2.0 / 21.0;
    for i in (1..10).rev() {
        r = madd::<FMA>(r, z, 2.0 / (2 * i + 1) as f64);
    }
    r *= z;
    let half_f2 = 0.5 * f * f;
    let low = madd::<FMA>(k, LN2_LO, c / u);
    let ln_m = f - (half_f2 - madd::<FMA>(s, half_f2 + r, low));
    let result = madd::<FMA>(k, LN2_HI, ln_m);
    if a == f64::INFINITY { a } else { result }
}

/// Load `L::LANES` values of `E` at `p` as f64 vectors: exact widening for f32, a plain load
/// for f64 (the check is resolved at compile time).
///
/// # Safety
/// `E` is f32 or f64, `p` points to `L::LANES` readable values, and the CPU supports `L`.
#[inline(always)]
pub unsafe fn load_widened<L: Lanes, E: Element>(p: *const E) -> L::V {
    // SAFETY: the caller's contract.
    unsafe {
        if std::any::TypeId::of::<E>() == std::any::TypeId::of::<f32>() {
            L::load_f32(p.cast::<f32>())
        } else {
            debug_assert!(std::any::TypeId::of::<E>() == std::any::TypeId::of::<f64>());
            L::load(p.cast::<f64>())
        }
    }
}

/// Transpose one `LANES × LANES` block in registers: row `i` of the block is `LANES` values at
/// `src + i·src_stride`, and lands as column `i` at `dst + i` (rows `dst + k·dst_stride`).
///
/// # Safety
/// As [`load_widened`] for every source row; `dst + k·dst_stride .. + LANES` writable for
/// `k < LANES`.
#[inline(always)]
pub unsafe fn transpose_block<L: Lanes, E: Element>(
    src: *const E,
    src_stride: usize,
    dst: *mut f64,
    dst_stride: usize,
) {
    // SAFETY: the caller's contract.
    unsafe {
        let mut v = [L::splat(0.0); 8];
        for (i, v) in v[..L::LANES].iter_mut().enumerate() {
            *v = load_widened::<L, E>(src.add(i * src_stride));
        }
        L::transpose(&mut v[..L::LANES]);
        for (k, v) in v[..L::LANES].iter().enumerate() {
            L::store(dst.add(k * dst_stride), *v);
        }
    }
}
