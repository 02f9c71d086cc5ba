//! The lowering plan: everything lowering needs from the typed IR, read in one place.

use qkc_dsl::ir::{Accum, ElemType, IntTy, Kernel, Scalar, ScaleIndex};
use qkc_dsl::layout::LayoutDesc;

use crate::loop_ir::{Buf, Elem, Ty};

#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub bufs: Vec<Buf>,
    pub dim_names: Vec<String>,
    /// Typed-IR dimension indices of M, N, K.
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub act: usize,
    pub weight: usize,
    pub layout: LayoutDesc,
    pub group: Option<u32>,
    /// Accumulator type of the inner (per-group) sum.
    pub acc: Ty,
    pub int: bool,
    pub scales: Vec<(usize, ScaleIndex)>,
    pub out: usize,
    pub out_elem: Elem,
    pub notes: Vec<String>,
}

pub fn elem_of(t: &ElemType) -> Elem {
    match t {
        ElemType::Packed { .. } => Elem::U8,
        ElemType::Scalar(Scalar::I8) => Elem::I8,
        ElemType::Scalar(Scalar::I32) => Elem::I32,
        ElemType::Scalar(Scalar::F16) => Elem::F16,
        ElemType::Scalar(Scalar::BF16) => Elem::BF16,
        ElemType::Scalar(Scalar::F32) => Elem::F32,
    }
}

impl Plan {
    pub fn new(k: &Kernel) -> Plan {
        let mut bufs: Vec<Buf> = k
            .inputs
            .iter()
            .map(|p| Buf {
                name: p.tensor.name.clone(),
                elem: elem_of(&p.tensor.ty),
                output: false,
            })
            .collect();
        // A plain i8 weight is read as packed bytes of the s8 byte layout.
        if bufs[k.weight].elem == Elem::I8 {
            bufs[k.weight].elem = Elem::U8;
        }
        bufs.push(Buf {
            name: k.output.name.clone(),
            elem: elem_of(&k.output.ty),
            output: true,
        });
        let (acc, int) = match k.accum {
            Accum::Int { ty: IntTy::I32, .. } => (Ty::I32, true),
            Accum::Int { ty: IntTy::I64, .. } => (Ty::I64, true),
            Accum::Float => (Ty::F32, false),
        };
        let layout = k.weight_layout();
        let mut notes = vec![
            format!("kernel {} lowered by qkc", k.name),
            format!(
                "weight {}: layout {} ({} bits/weight)",
                k.inputs[k.weight].tensor.name,
                layout,
                layout.bits_per_weight()
            ),
        ];
        for o in &k.proofs {
            notes.push(format!("{} {}: {}", o.status.label(), o.id, o.claim));
        }
        Plan {
            name: k.name.clone(),
            out: bufs.len() - 1,
            out_elem: elem_of(&k.output.ty),
            bufs,
            dim_names: k.dims.iter().map(|d| d.name.clone()).collect(),
            m: k.m,
            n: k.n,
            k: k.k,
            act: k.act,
            weight: k.weight,
            layout,
            group: k.group,
            acc,
            int,
            scales: k.scales().collect(),
            notes,
        }
    }
}
