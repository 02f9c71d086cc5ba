//! `DotPacked` on x86 with AVX-512 VBMI and VNNI: a block of 64 units (8 units per
//! 64-bit lane) decoded and multiplied in a handful of 512-bit instructions.
//!
//! ```text
//! raw  = masked load of the block's 8·stride bytes          (no read past the block)
//! q    = shufflevector(raw): 64-bit lane i ← the bytes of 8-unit group i   (vpermb)
//! x_f  = vpmultishiftqb(ctl_f, q): byte u of each lane ← bits at u·stride + shift_f
//! u_f  = (x_f & mask_f) ^ bias_f     signed fields become offset binary (vpternlog)
//! w    = u_0 (one field) | unpacklo/hi(u_0, u_1) (two fields, back in weight order)
//! d    = vpdpbusd(w, activations) - vpdpbusd(bias, activations)       exact in i32
//! ```
//!
//! With two fields the groups are placed in the order 0,4,1,5,2,6,3,7 so that the
//! in-lane byte interleave of `unpacklo` yields weights 0..63 and `unpackhi` weights
//! 64..127, matching 64 contiguous activations each. Every product and partial sum is
//! an exact integer (codes ≤ 8 bits, activations i8), so the result equals the
//! interpreter's bit for bit.

use inkwell::types::BasicTypeEnum;
use inkwell::values::{IntValue, VectorValue};

use super::Tr;

/// How far ahead of the block being decoded its weight row is prefetched (bytes).
pub(crate) const PREFETCH_BYTES: usize = 4096;
use crate::llvm::LlvmError;
use crate::loop_ir::{packed_block_bytes, packed_stride_bits, Elem, Expr, LayoutDesc, Ty};

/// Why a `DotPacked` cannot use the AVX-512 sequence, if it cannot.
pub(crate) fn unsupported_reason(l: &LayoutDesc, count: u32, act: Elem) -> Option<String> {
    let stride = packed_stride_bits(l);
    if !(1..=2).contains(&l.per_unit()) {
        return Some(format!(
            "{} fields per unit (1 or 2 supported)",
            l.per_unit()
        ));
    }
    if count as usize != 64 * l.per_unit() {
        return Some(format!(
            "{count} weights per block (64 units = {} weights expected)",
            64 * l.per_unit()
        ));
    }
    if !(1..=8).contains(&stride) {
        return Some(format!("{stride}-bit units"));
    }
    if act != Elem::I8 {
        return Some(format!("{act:?} activations (i8 expected)"));
    }
    None
}

impl<'ctx> Tr<'_, 'ctx> {
    fn const_bytes(&self, bytes: &[u8]) -> VectorValue<'ctx> {
        let i8t = self.ctx.i8_type();
        let v: Vec<_> = bytes
            .iter()
            .map(|&b| i8t.const_int(b as u64, false))
            .collect();
        inkwell::types::VectorType::const_vector(&v)
    }

    fn shuffle(
        &self,
        a: VectorValue<'ctx>,
        b: VectorValue<'ctx>,
        idx: &[u32],
    ) -> Result<VectorValue<'ctx>, LlvmError> {
        let i32t = self.ctx.i32_type();
        let m: Vec<_> = idx
            .iter()
            .map(|&i| i32t.const_int(i as u64, false))
            .collect();
        let mask = inkwell::types::VectorType::const_vector(&m);
        Ok(self.b.build_shuffle_vector(a, b, mask, "")?)
    }

    fn dpbusd(
        &self,
        acc: VectorValue<'ctx>,
        u8s: VectorValue<'ctx>,
        s8s: VectorValue<'ctx>,
    ) -> Result<VectorValue<'ctx>, LlvmError> {
        let v16 = self.ctx.i32_type().vec_type(16);
        let a = self.b.build_bit_cast(u8s, v16, "")?;
        let b = self.b.build_bit_cast(s8s, v16, "")?;
        let r = self.call_intrinsic(
            "llvm.x86.avx512.vpdpbusd.512",
            &[],
            &[acc.into(), a.into(), b.into()],
        )?;
        Ok(r.into_vector_value())
    }

    /// The block's `nb` bytes at `p` (byte offset `off` of `buf`) in a `<64 x i8>`,
    /// the rest zero or the bytes after the block. A plain 64-byte load while it stays
    /// inside the buffer (masked AVX-512 loads do not train this CPU's hardware
    /// prefetchers: 3× slower from DRAM), a masked load (which never faults) at the
    /// buffer's end; and a prefetch [`PREFETCH_BYTES`] ahead, since a row's blocks
    /// are read in order.
    fn block_load(
        &mut self,
        buf: usize,
        p: inkwell::values::PointerValue<'ctx>,
        off: IntValue<'ctx>,
        nb: usize,
    ) -> Result<VectorValue<'ctx>, LlvmError> {
        let i8t = self.ctx.i8_type();
        let v64 = i8t.vec_type(64);
        // SAFETY (LLVM IR semantics): a prefetch never faults, wherever it points.
        let ahead = unsafe {
            self.b
                .build_gep(i8t, p, &[self.i64c(PREFETCH_BYTES as i64)], "")?
        };
        let prefetch = self.intrinsic("llvm.prefetch", &[p.get_type().into()])?;
        // Read, high locality, data cache.
        self.b.build_call(
            prefetch,
            &[
                ahead.into(),
                self.i32c(0).into(),
                self.i32c(3).into(),
                self.i32c(1).into(),
            ],
            "",
        )?;
        let Some(&len) = self.lens.get(buf) else {
            return Err(LlvmError::Unsupported(
                "dot_packed outside a CPU function (no buffer lengths)".into(),
            ));
        };
        let end = self.b.build_int_add(off, self.i64c(64), "")?;
        let inside = self
            .b
            .build_int_compare(inkwell::IntPredicate::SLE, end, len, "")?;
        let full_bb = self.ctx.append_basic_block(self.func, "blk.full");
        let edge_bb = self.ctx.append_basic_block(self.func, "blk.edge");
        let join = self.ctx.append_basic_block(self.func, "blk.join");
        self.b.build_conditional_branch(inside, full_bb, edge_bb)?;
        self.b.position_at_end(full_bb);
        let full = self.b.build_load(v64, p, "blk")?;
        super::set_align(full, 1)?;
        self.b.build_unconditional_branch(join)?;
        self.b.position_at_end(edge_bb);
        let bool_t = self.ctx.bool_type();
        let mask: Vec<_> = (0..64)
            .map(|i| bool_t.const_int((i < nb) as u64, false))
            .collect();
        let edge = self.call_intrinsic(
            "llvm.masked.load",
            &[BasicTypeEnum::from(v64), p.get_type().into()],
            &[
                p.into(),
                self.i32c(1).into(),
                inkwell::types::VectorType::const_vector(&mask).into(),
                v64.const_zero().into(),
            ],
        )?;
        self.b.build_unconditional_branch(join)?;
        self.b.position_at_end(join);
        let phi = self.b.build_phi(v64, "blk")?;
        phi.add_incoming(&[(&full, full_bb), (&edge, edge_bb)]);
        Ok(phi.as_basic_value().into_vector_value())
    }

    /// `acc + Σ_j act[act_index + j] · code_j` over one block (see the module docs).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dot_packed(
        &mut self,
        act: usize,
        act_index: &Expr,
        wbuf: usize,
        byte_offset: &Expr,
        l: &LayoutDesc,
        count: u32,
        acc: &Expr,
    ) -> Result<IntValue<'ctx>, LlvmError> {
        if !self.low.packed_dot {
            return Err(LlvmError::Unsupported(
                "dot_packed needs x86 AVX-512 VBMI and VNNI on the target".into(),
            ));
        }
        if let Some(why) = unsupported_reason(l, count, self.f.bufs[act].elem) {
            return Err(LlvmError::Unsupported(format!("dot_packed over {why}")));
        }
        let stride = packed_stride_bits(l);
        let nb = packed_block_bytes(l, count);
        let per = l.per_unit();
        let base = self.int_of(act_index, Ty::I64)?;
        let off = self.int_of(byte_offset, Ty::I64)?;
        let accv = self.int_of(acc, Ty::I32)?;
        let wp = self.addr(wbuf, off, 1, nb as u64)?;
        let ap = self.addr(act, base, 1, count as u64)?;

        let i8t = self.ctx.i8_type();
        let v64 = i8t.vec_type(64);
        let raw = self.block_load(wbuf, wp, off, nb)?;
        // 64-bit lane i holds 8-unit group order[i] (`stride` bytes; the rest repeats
        // the group's last byte and is never part of a field).
        let order: [usize; 8] = if per == 2 {
            [0, 4, 1, 5, 2, 6, 3, 7]
        } else {
            [0, 1, 2, 3, 4, 5, 6, 7]
        };
        let idx: Vec<u32> = (0..64)
            .map(|i| (order[i / 8] * stride + (i % 8).min(stride - 1)) as u32)
            .collect();
        let q = self.shuffle(raw, v64.get_undef(), &idx)?;
        let mut fields = Vec::with_capacity(per);
        let mut bias = Vec::with_capacity(per);
        for fd in l.fields() {
            let ctl: Vec<u8> = (0..64)
                .map(|i| ((i % 8) * stride + fd.shift as usize) as u8)
                .collect();
            let x = self
                .call_intrinsic(
                    "llvm.x86.avx512.pmultishift.qb.512",
                    &[],
                    &[self.const_bytes(&ctl).into(), q.into()],
                )?
                .into_vector_value();
            let m = ((1u16 << fd.bits) - 1) as u8;
            let bb = if fd.signed { 1u8 << (fd.bits - 1) } else { 0 };
            let x = self.b.build_and(x, self.const_bytes(&[m; 64]), "")?;
            let x = if bb != 0 {
                self.b.build_xor(x, self.const_bytes(&[bb; 64]), "")?
            } else {
                x
            };
            fields.push(x);
            bias.push(bb);
        }
        let weights: Vec<VectorValue<'ctx>> = if per == 2 {
            let lo: Vec<u32> = (0..64)
                .map(|i| {
                    let (lane, j) = (i / 16, i % 16);
                    (16 * lane + j / 2 + if j % 2 == 1 { 64 } else { 0 }) as u32
                })
                .collect();
            let hi: Vec<u32> = lo.iter().map(|&x| x + 8).collect();
            vec![
                self.shuffle(fields[0], fields[1], &lo)?,
                self.shuffle(fields[0], fields[1], &hi)?,
            ]
        } else {
            vec![fields[0]]
        };
        let v16 = self.ctx.i32_type().vec_type(16);
        let mut d = v16.const_zero();
        let mut c = v16.const_zero();
        let signed = bias.iter().any(|&b| b != 0);
        let bias_bytes: Vec<u8> = (0..64).map(|i| bias[i % per]).collect();
        let bias_v = self.const_bytes(&bias_bytes);
        for (i, w) in weights.iter().enumerate() {
            let p = if i == 0 {
                ap
            } else {
                // SAFETY (LLVM IR semantics): the whole range was bounds-checked above.
                unsafe { self.b.build_gep(i8t, ap, &[self.i64c(64 * i as i64)], "")? }
            };
            let a = self.b.build_load(v64, p, "act")?;
            super::set_align(a, 1)?;
            let a = a.into_vector_value();
            d = self.dpbusd(d, *w, a)?;
            if signed {
                c = self.dpbusd(c, bias_v, a)?;
            }
        }
        if signed {
            d = self.b.build_int_sub(d, c, "")?;
        }
        let s =
            self.int(self.call_intrinsic("llvm.vector.reduce.add", &[v16.into()], &[d.into()])?)?;
        Ok(self.b.build_int_add(accv, s, "")?)
    }
}
