//! Integer label encoding: sorted unique labels and each row's code, in Rust.
//!
//! A dense table indexed by `label − min` when the label range is small (one pass to find the
//! range, one to mark, one to code); otherwise a sort of the distinct values and a binary
//! search per row. Either way the result equals `np.unique(y, return_inverse=True)`.

use ndarray::ArrayView1;

use crate::element::Label;

/// Largest label range (max − min + 1) encoded with a dense table: 2^22 entries (32 MiB of
/// u64), or eight entries per row, whichever is smaller, so the table never dwarfs the labels.
fn dense_limit(n: usize) -> u64 {
    (1u64 << 22).min((n as u64).saturating_mul(8).max(1024))
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
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for v in labels.iter() {
        let v = v.to_i64();
        lo = lo.min(v);
        hi = hi.max(v);
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
