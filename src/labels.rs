//! Integer label encoding: sorted unique labels and each row's code, in Rust.
//!
//! Labels in `0..64` take one pass (the range and a bit mask of the labels seen; vectorised on
//! AVX-512), and a second to code them unless they are exactly `0..k−1`. Otherwise a dense
//! table indexed by `label − min` when the label range is small (one pass to find the range,
//! one to mark, one to code); else a sort of the distinct values and a binary search per row.
//! Either way the result equals `np.unique(y, return_inverse=True)`.

use ndarray::ArrayView1;

use crate::element::Label;

/// Largest label range (max − min + 1) encoded with a dense table: 2^22 entries (32 MiB of
/// u64), or eight entries per row, whichever is smaller, so the table never dwarfs the labels.
fn dense_limit(n: usize) -> u64 {
    (1u64 << 22).min((n as u64).saturating_mul(8).max(1024))
}

/// The smallest and largest label and, speculatively, the set of labels in `0..64` as a bit
/// mask (bit `v mod 64` for each label `v`), in one pass: the common case is a few classes
/// coded `0..k−1`, and a separate marking pass cost 1 ns a row.
#[inline(always)]
fn range_and_mask_of<'a, L: Label + 'a>(labels: impl Iterator<Item = &'a L>) -> (i64, i64, u64) {
    let (mut lo, mut hi, mut bits) = (i64::MAX, i64::MIN, 0u64);
    for v in labels {
        let v = v.to_i64();
        lo = lo.min(v);
        hi = hi.max(v);
        bits |= 1u64 << (v as u64 & 63);
    }
    (lo, hi, bits)
}

/// [`range_and_mask_of`], vectorised by the compiler for AVX-512 when the labels are contiguous
/// and that level is active (64-bit min/max need AVX-512): 2e6 labels 1.6 → 0.5 ms.
fn range_and_mask<L: Label>(labels: ArrayView1<'_, L>) -> (i64, i64, u64) {
    let Some(slice) = labels.as_slice() else {
        return range_and_mask_of(labels.iter());
    };
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
    fn avx512<L: Label>(slice: &[L]) -> (i64, i64, u64) {
        range_and_mask_of(slice.iter())
    }
    let level = crate::simd::active_level();
    // SAFETY: simd_dispatch! runs the AVX-512 arm only on a CPU with those features; the AVX2
    // level has no 64-bit min/max, so it takes the portable loop.
    crate::simd_dispatch!(
        level,
        range_and_mask_of(slice.iter()),
        range_and_mask_of(slice.iter()),
        unsafe { avx512(slice) }
    )
}

/// `(classes, codes)`: the sorted distinct labels and, per row, the index of its label.
pub fn encode_labels<L: Label>(labels: ArrayView1<'_, L>) -> (Vec<i64>, Vec<i64>) {
    let (classes, codes) = encode_labels_unless_codes(labels);
    let codes = codes.unwrap_or_else(|| labels.iter().map(|v| v.to_i64()).collect());
    (classes, codes)
}

/// As [`encode_labels`], but `None` for the codes when they equal the labels (the classes are
/// exactly `0, 1, …, k−1`, the common case): the caller then fits with the labels themselves and
/// saves a pass over them and an n-sized allocation.
pub fn encode_labels_unless_codes<L: Label>(
    labels: ArrayView1<'_, L>,
) -> (Vec<i64>, Option<Vec<i64>>) {
    let n = labels.len();
    if n == 0 {
        return (Vec::new(), Some(Vec::new()));
    }
    let (lo, hi, bits) = range_and_mask(labels);
    if lo >= 0 && hi < 64 {
        let classes: Vec<i64> = (0..64).filter(|&b| bits >> b & 1 == 1).collect();
        if classes.len() as i64 == hi + 1 {
            return (classes, None);
        }
        let mut table = [0i64; 64];
        for (code, &label) in classes.iter().enumerate() {
            table[label as usize] = code as i64;
        }
        let codes = labels.iter().map(|v| table[v.to_i64() as usize]).collect();
        return (classes, Some(codes));
    }
    let span = (hi as i128 - lo as i128 + 1) as u128;
    if span <= u128::from(dense_limit(n)) {
        let mut table = vec![u64::MAX; span as usize];
        for v in labels.iter() {
            table[(v.to_i64() - lo) as usize] = 0;
        }
        let mut classes = Vec::new();
        for (offset, slot) in table.iter_mut().enumerate() {
            if *slot == 0 {
                *slot = classes.len() as u64;
                classes.push(lo + offset as i64);
            }
        }
        if lo == 0 && classes.len() == table.len() {
            return (classes, None);
        }
        let codes = labels
            .iter()
            .map(|v| table[(v.to_i64() - lo) as usize] as i64)
            .collect();
        (classes, Some(codes))
    } else {
        let mut classes: Vec<i64> = labels.iter().map(|v| v.to_i64()).collect();
        classes.sort_unstable();
        classes.dedup();
        let codes = labels
            .iter()
            .map(|v| classes.binary_search(&v.to_i64()).map_or(-1, |i| i as i64))
            .collect();
        (classes, Some(codes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass bit-mask branch (labels in 0..64) and the table and sort branches agree with
    /// `np.unique(y, return_inverse=True)`, worked out by hand.
    #[test]
    fn every_branch_matches_unique_with_inverse() {
        type Case<'a> = (&'a [i64], &'a [i64], Option<&'a [i64]>);
        let cases: [Case; 6] = [
            (&[1, 0, 2, 1], &[0, 1, 2], None),
            (&[5, 0, 2, 5], &[0, 2, 5], Some(&[2, 0, 1, 2])),
            (&[63, 63], &[63], Some(&[0, 0])),
            (&[64, 0, 64], &[0, 64], Some(&[1, 0, 1])),
            (&[-1, 3, -1], &[-1, 3], Some(&[0, 1, 0])),
            (
                &[i64::MIN, i64::MAX, 0],
                &[i64::MIN, 0, i64::MAX],
                Some(&[0, 2, 1]),
            ),
        ];
        for (labels, classes, codes) in cases {
            let (got_classes, got_codes) = encode_labels_unless_codes(ArrayView1::from(labels));
            assert_eq!(got_classes, classes, "{labels:?}");
            assert_eq!(got_codes.as_deref(), codes, "{labels:?}");
        }
    }

    /// The dispatched range-and-mask pass (AVX-512 here when the CPU has it) equals the portable
    /// loop, for int64 and int32 labels, contiguous and strided.
    #[test]
    fn range_and_mask_matches_the_portable_loop() {
        let mut state = 3u64;
        for n in [0usize, 1, 7, 8, 9, 63, 64, 65, 1000] {
            for span in [2u64, 64, 65, 1 << 40] {
                let labels: Vec<i64> = (0..n)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((state >> 20) % span) as i64 - i64::from(span > 64) * 3
                    })
                    .collect();
                let narrow: Vec<i32> = labels.iter().map(|&v| v as i32).collect();
                let view = ArrayView1::from(&labels[..]);
                assert_eq!(
                    range_and_mask(view),
                    range_and_mask_of(labels.iter()),
                    "{n} {span}"
                );
                let strided = view.slice(ndarray::s![..;2]);
                assert_eq!(range_and_mask(strided), range_and_mask_of(strided.iter()));
                let view32 = ArrayView1::from(&narrow[..]);
                assert_eq!(range_and_mask(view32), range_and_mask_of(narrow.iter()));
            }
        }
    }
}
