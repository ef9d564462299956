//! Exact arithmetic for the last tier of the posteriors: jll differences of rows so far from
//! every class that double-double cannot resolve them.
//!
//! Every float64 is a dyadic rational, so `(x − μ)²` is an exact integer times a power of
//! two, and `(x − μ)²/(2 var)` differs from its value in units of `2^-scale`, rounded down,
//! by less than one unit. A class's jll `k − Σ (x − μ)²/(2 var)` in those units is then
//! exact to `d + 2` units (the double-double `k` is exact to its own `u²` relative error), and
//! the difference of two classes, formed exactly, is rounded once. With `scale` at least
//! `64 + log2(2d + 4)` the error of every difference is below `2^-65` absolute, whatever the
//! magnitude of the quadratic sums (up to `~1e925` per term, where `x − μ` itself overflows
//! float64). Integers are `num-bigint`'s.

use num_bigint::{BigInt, BigUint};
use num_traits::ToPrimitive;

/// `(m, e)` with `v = m·2^e` exactly, `m` an integer of at most 53 bits (0 for `v = 0`).
/// `v` must be finite.
fn decompose(v: f64) -> (i64, i64) {
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i64;
    let fraction = (bits & ((1u64 << 52) - 1)) as i64;
    let (m, e) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    (if v.is_sign_negative() { -m } else { m }, e)
}

/// `value·2^shift` rounded toward −∞.
fn shifted(value: BigInt, shift: i64) -> BigInt {
    let amount = usize::try_from(shift.unsigned_abs()).unwrap_or(usize::MAX);
    if shift >= 0 {
        value << amount
    } else {
        value >> amount
    }
}

/// `2^k` for `k` in `-1074..=1023`, exactly.
pub const fn pow2(k: i32) -> f64 {
    if k >= -1022 {
        f64::from_bits(((1023 + k) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (k + 1074))
    }
}

/// Units of `2^-scale` that keep the jll differences of `d` features within `2^-65`.
pub fn units_for(d: usize) -> i64 {
    64 + i64::from((2 * d + 4).next_power_of_two().trailing_zeros())
}

/// A finite float64 in units of `2^-scale`, rounded toward −∞.
pub fn to_units(v: f64, scale: i64) -> BigInt {
    let (m, e) = decompose(v);
    shifted(BigInt::from(m), e + scale)
}

/// `(x − μ)²/(2 var)` in units of `2^-scale`, rounded down (`x`, `μ` finite, `var` finite and
/// positive). `x − μ` and its square are formed exactly, so this holds even where `x − μ`
/// overflows float64.
pub fn quadratic_units(x: f64, mu: f64, var: f64, scale: i64) -> BigUint {
    let ((mx, ex), (mm, em)) = (decompose(x), decompose(mu));
    let low = ex.min(em);
    // x − μ = t·2^low exactly.
    let t = shifted(BigInt::from(mx), ex - low) - shifted(BigInt::from(mm), em - low);
    let square = t.magnitude() * t.magnitude();
    // 2 var = odd·2^(ev + 1 + trailing zeros).
    let (mv, ev) = decompose(var);
    let zeros = i64::from(mv.trailing_zeros());
    let (odd, e2v) = ((mv >> zeros) as u64, ev + 1 + zeros);
    let shift = 2 * low - e2v + scale;
    let amount = usize::try_from(shift.unsigned_abs()).unwrap_or(usize::MAX);
    if shift >= 0 {
        (square << amount) / odd
    } else {
        square / (BigUint::from(odd) << amount)
    }
}

/// `units·2^-scale` rounded to the nearest float64 (±inf beyond its range). Beyond 1000 bits
/// the value is first cut to its leading 1000 bits, a relative change below `2^-999`.
pub fn units_to_f64(units: &BigInt, scale: i64) -> f64 {
    let bits = i64::try_from(units.bits()).unwrap_or(i64::MAX);
    let drop = (bits - 1000).max(0);
    let head = shifted(units.clone(), -drop);
    let mut v = head.to_f64().unwrap_or(f64::NAN);
    // Multiply by 2^(drop − scale) in steps that are powers of two within float64's range.
    let mut exponent = drop - scale;
    while exponent != 0 && v != 0.0 && v.is_finite() {
        let step = exponent.clamp(-1000, 1000);
        v *= pow2(step as i32);
        exponent -= step;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_trip_and_quadratics_are_exact() {
        let scale = units_for(8);
        for v in [0.0, 1.0, -2.5, 1e-300, -5e-324, 1.7976931348623157e308, 0.1] {
            assert_eq!(
                units_to_f64(&to_units(v, scale + 1100), scale + 1100),
                v,
                "{v}"
            );
        }
        // (3 − 1)²/(2·0.5) = 4 exactly; (1e308 − (−1e308))²/(2·1) = 2e616, far beyond float64.
        assert_eq!(quadratic_units(3.0, 1.0, 0.5, 0), BigUint::from(4u32));
        let huge = quadratic_units(1e308, -1e308, 1.0, 0);
        assert!(huge.bits() > 2040 && huge.bits() < 2050);
        // 1/(2·0.1) is not a dyadic rational: the result is the floor, within one unit.
        let q = quadratic_units(1.0, 0.0, 0.1, scale);
        let exact = 1.0 / (2.0 * 0.1);
        let got = units_to_f64(&BigInt::from(q), scale);
        assert!(
            (got - exact).abs() <= 2.0 * f64::EPSILON * exact,
            "{got} vs {exact}"
        );
    }
}
