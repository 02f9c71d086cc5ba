//! qkc proc-macros: `#[packed]` declares a packed weight layout as a Rust struct
//! (see [`packed`]); `quant_kernel!` declares kernels in the `.qk` language, checked
//! at compile time (see [`quant_kernel!`]).
//!
//! Each macro has its own module and this file only holds the thin
//! `#[proc_macro*]` entry points, which forward to the module and turn its
//! `syn::Error` into `compile_error!` tokens.

use proc_macro::TokenStream;

mod kernel;
mod packed;

/// Declares a packed layout: one struct = one unit, one field = one code.
///
/// ```ignore
/// #[qkc::packed(storage = stream)]
/// struct Q3p5 {
///     #[bits(4)] hi: i8,   // bits 6..=3 (first field takes the highest bits)
///     #[bits(3)] lo: i8,   // bits 2..=0
/// }
/// assert_eq!(Q3p5::LAYOUT, qkc::layout::Q3P5_STREAM);
/// ```
///
/// * `storage = stream` (units back to back, LSB first) or `storage = byte`
///   (one unit per byte). Required.
/// * Fields are in weight order: field 0 holds the weight at the even K position.
/// * `#[bits(N)]` gives a width of 1..=8 bits; fields are then laid out from the
///   top of the unit down (first field = highest bits) and the unit is as wide
///   as the sum of the widths, at most 8 bits.
/// * `#[bits(MSB..=LSB)]` places a field explicitly; either every field has an
///   explicit range or none does. The unit is then `max MSB + 1` bits wide;
///   bits covered by no field are written 0.
/// * The code is signed for `i8`/`i16`/`i32` fields and unsigned for
///   `u8`/`u16`/`u32` fields. `#[bits(N, signed)]` / `#[bits(N, unsigned)]`
///   overrides that, but the field type must hold every code of the field:
///   a signed code never fits an unsigned type, and an unsigned N-bit code
///   needs a signed type of more than N bits (so `#[bits(8, unsigned)] x: i8`
///   is rejected).
///
/// Generates the struct (with `Clone, Copy, Debug, PartialEq, Eq` derived),
/// `pub const LAYOUT: ::qkc::layout::LayoutDesc`, `pub const fn pack(self) -> u8`,
/// `pub const fn unpack(unit: u8) -> Self`, and a compile-time check that every
/// combination of codes round-trips through `pack`/`unpack` without touching
/// other fields' bits. `pack` keeps only each field's low `bits` bits, so a value
/// outside the field's code range is truncated, not rejected.
#[proc_macro_attribute]
pub fn packed(attr: TokenStream, item: TokenStream) -> TokenStream {
    packed::expand(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Declares quantized matmul kernels in the `.qk` language (`docs/language.md`),
/// checked at compile time by the same front end as `qkc check`, and generates a
/// type per kernel with its source, PTX and HIP code and typed CPU/CUDA entry
/// points.
///
/// ```ignore
/// qkc::quant_kernel! {
///     /// 3.5-bit GEMV: int8 activations, f16 group scales.
///     pub Gemv35 = kernel gemv(x: i8[M, K], xs: f32[M], w: q3p5[N, K], ws: f16[N, K / 128])
///         -> y: f32[M, N]
///     {
///         where M <= 8;
///         y[m, n] = sum(k) x[m, k] * w[n, k] * ws[n, k / 128] * xs[m];
///     }
/// }
///
/// let gemv = Gemv35::cpu()?;                    // Cranelift JIT
/// let y: Vec<f32> = gemv.run(&x, &xs, &w, &ws)?; // dims inferred from the slices
/// ```
///
/// **Input.** Any number of items `#[attrs] vis Name = KERNEL`, where `KERNEL` is
/// either `.qk` tokens (optional `layout` declarations, then one `kernel`, ending at
/// its `{ .. }` body) or a string literal holding the `.qk` text (then end the item
/// with `;`). Doc comments and attributes go to the generated struct.
/// `use layout path::Type as name;` binds a `#[qkc::packed]` struct to the `.qk`
/// layout `name` (declared in the kernel, or built in): the macro checks by const
/// evaluation that `Type::LAYOUT` is that layout, with the error on `Type`.
///
/// **Errors** are the front end's diagnostics (message, label, help, `qkc::` code).
/// With tokens they point at the offending tokens; with a string literal they
/// cover the literal (a sub-span on nightly) and quote the line with a caret.
///
/// **Generated**, for `pub Gemv35 = kernel gemv(..)`:
/// * `pub struct Gemv35;` with consts `NAME`, `SOURCE`, `DIMS`, `DIM_MAX`, `INPUTS`,
///   `OUTPUT`, `WEIGHT_LAYOUT`, `GROUP`, `DIMS_PLAN`, `PTX_SM80`, `PTX_SM90`,
///   `PTX_ERROR`, `HIP_ARCH`, `HIP_SOURCE`, `HIP_HEADER`, `HIP_ERROR`, and
///   `kernel()`, `cpu()`, `cpu_with(&CpuOptions)`, `cuda(&Arc<CudaDevice>)`;
/// * `pub struct Gemv35Cpu` and `pub struct Gemv35Cuda` with the typed
///   `run(&self, x: &[i8], xs: &[f32], w: &[u8], ws: &[f16]) -> Result<Vec<f32>, qkc::typed::Error>`
///   (one slice per input, packed weights as bytes; dims inferred from the
///   lengths when they determine them), `run_dims(&self, [usize; 3], ..)` and
///   `inner()`; the CUDA type also has `upload`, `launch` and `download`.
///
/// Generated code refers to `::qkc`, so it needs the `qkc` crate as a dependency.
#[proc_macro]
pub fn quant_kernel(input: TokenStream) -> TokenStream {
    kernel::expand(input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
