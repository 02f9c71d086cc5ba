//! Interval analysis of integer accumulators, and the proof obligations it discharges.
//!
//! Every code of a layout field and every i8 activation has a known range, so each
//! product `a * w` lies in an interval fixed by the field that holds `w`. The inner
//! sum runs over at most `L` consecutive positions along K, starting at a unit
//! boundary (groups are unit-aligned), so the number of terms taken from each field
//! is known exactly and the sum's range is the sum of the per-field ranges — an exact
//! (attainable) interval, not an over-approximation. From it follows the smallest
//! accumulator that cannot overflow, or the largest `L` that fits a requested one.

use std::fmt;

use crate::ir::{IntTy, Scalar};
use crate::layout::LayoutDesc;

/// Result of one proof obligation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Holds for every input allowed by the declared bounds.
    Proved,
    /// Could not be proved as written; the compiler chose a wider type that is proved.
    Widened,
    /// A fact reported for information (e.g. an f32 conversion that may round).
    Note,
    /// Does not hold; the kernel is refused.
    Failed,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Proved => "proved",
            Status::Widened => "widened",
            Status::Note => "note",
            Status::Failed => "FAILED",
        }
    }
}

/// One proof obligation and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obligation {
    /// Short identifier, e.g. `acc.fits`.
    pub id: &'static str,
    /// What must hold.
    pub claim: String,
    /// How it was shown, with the numbers.
    pub evidence: String,
    pub status: Status,
}

impl fmt::Display for Obligation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<8} {:<13} {}\n{:<22} {}",
            self.status.label(),
            self.id,
            self.claim,
            "",
            self.evidence
        )
    }
}

/// Range of an activation type's values when it enters an integer product.
pub fn act_range(a: Scalar) -> Option<(i64, i64)> {
    match a {
        Scalar::I8 => Some((i8::MIN as i64, i8::MAX as i64)),
        _ => None,
    }
}

/// Exact range of a product of values in `a` and `b`.
pub fn mul_range(a: (i64, i64), b: (i64, i64)) -> (i64, i64) {
    let c = [a.0 * b.0, a.0 * b.1, a.1 * b.0, a.1 * b.1];
    (
        c.iter().copied().min().unwrap_or(0),
        c.iter().copied().max().unwrap_or(0),
    )
}

/// Per-field product ranges of `a * w` for an activation range and a layout.
pub fn product_ranges(act: (i64, i64), layout: &LayoutDesc) -> Vec<(i64, i64)> {
    layout
        .fields()
        .iter()
        .map(|f| mul_range(act, (f.min() as i64, f.max() as i64)))
        .collect()
}

/// Exact range of a sum of `terms` consecutive products starting at a unit boundary.
pub fn sum_range(products: &[(i64, i64)], terms: u64) -> (i128, i128) {
    let per = products.len() as u64;
    let mut lo = 0i128;
    let mut hi = 0i128;
    for (i, &(plo, phi)) in products.iter().enumerate() {
        let i = i as u64;
        let count = if terms > i {
            (terms - i).div_ceil(per)
        } else {
            0
        } as i128;
        // Every product range contains 0, so taking every term at its extreme is
        // attainable and the sum range grows with the count.
        lo += count * plo.min(0) as i128;
        hi += count * phi.max(0) as i128;
    }
    (lo, hi)
}

/// Largest number of terms whose sum provably fits `ty`.
pub fn max_terms(products: &[(i64, i64)], ty: IntTy) -> u64 {
    let fits = |t: u64| {
        let (lo, hi) = sum_range(products, t);
        lo >= ty.min() && hi <= ty.max()
    };
    let (mut good, mut bad) = (0u64, 1u64);
    while fits(bad) {
        good = bad;
        if bad >= u64::MAX / 4 {
            return bad;
        }
        bad *= 2;
    }
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if fits(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    good
}

/// Formats an integer with thousands separators: 2,097,151.
pub fn commas(v: i128) -> String {
    let s = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Spelling of the product type, e.g. `i8 × s4` or `i8 × {s4, s3}`.
pub fn product_name(act: Scalar, layout: &LayoutDesc) -> String {
    let ws: Vec<String> = layout.fields().iter().map(|f| f.type_name()).collect();
    if ws.len() == 1 {
        format!("{} × {}", act.name(), ws[0])
    } else {
        format!("{} × {{{}}}", act.name(), ws.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{builtin, Q3P5_STREAM};

    #[test]
    fn i8_times_s4_bound_matches_hand_computation() {
        // products lie in [-1016, 1024]; 2^31-1 / 1024 = 2,097,151.99
        let p = product_ranges((-128, 127), &builtin("s4").unwrap_or(Q3P5_STREAM));
        assert_eq!(p, vec![(-1016, 1024)]);
        assert_eq!(max_terms(&p, IntTy::I32), 2_097_151);
    }

    #[test]
    fn pair_counts_each_field_exactly() {
        let p = product_ranges((-128, 127), &Q3P5_STREAM);
        // s4 positions: [-1016, 1024]; s3 positions: [-508, 512]
        assert_eq!(p, vec![(-1016, 1024), (-508, 512)]);
        assert_eq!(sum_range(&p, 3), (-1016 * 2 - 508, 1024 * 2 + 512));
        assert_eq!(
            sum_range(&p, 128),
            (-1016 * 64 - 508 * 64, 1024 * 64 + 512 * 64)
        );
    }

    #[test]
    fn commas_groups_thousands() {
        assert_eq!(commas(2_097_151), "2,097,151");
        assert_eq!(commas(-1000), "-1,000");
        assert_eq!(commas(999), "999");
    }
}
