//! Scale hoisting: which scale multiplies happen once per group and which once per
//! output. Integer (or f32) products are summed within a group first; the product of
//! the group's scales multiplies that partial sum; row and column scales multiply the
//! finished sum. This is the IR's canonical form, applied in every schedule.

use qkc_dsl::ir::ScaleIndex;

use super::Plan;
use crate::loop_ir::build::*;
use crate::loop_ir::Expr;

fn product(terms: Vec<Expr>) -> Option<Expr> {
    terms.into_iter().reduce(mul)
}

/// Product of the group scales of group `g` (`I64`), for weight row `n` and activation
/// row `m` (`I64`); `groups` is the number of groups per row (`I64`). `None` if the
/// kernel has no group scales.
pub fn group_scale(p: &Plan, m: &Expr, n: &Expr, g: &Expr, groups: &Expr) -> Option<Expr> {
    product(
        p.scales
            .iter()
            .filter_map(|&(buf, s)| match s {
                ScaleIndex::ColGroup => {
                    Some(load(buf, add(mul(n.clone(), groups.clone()), g.clone())))
                }
                ScaleIndex::RowGroup => {
                    Some(load(buf, add(mul(m.clone(), groups.clone()), g.clone())))
                }
                _ => None,
            })
            .collect(),
    )
}

/// Product of the row and column scales of output `[m, n]`; `None` if there are none.
pub fn outer_scale(p: &Plan, m: &Expr, n: &Expr) -> Option<Expr> {
    product(
        p.scales
            .iter()
            .filter_map(|&(buf, s)| match s {
                ScaleIndex::Row => Some(load(buf, m.clone())),
                ScaleIndex::Col => Some(load(buf, n.clone())),
                _ => None,
            })
            .collect(),
    )
}
