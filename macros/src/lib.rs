//! qkc proc-macros: `#[packed]` declares a packed weight layout as a Rust struct
//! (see [`packed`]); the `quant_kernel!` function-like macro will live next to it.
//!
//! Each macro has its own module and this file only holds the thin
//! `#[proc_macro*]` entry points, which forward to the module and turn its
//! `syn::Error` into `compile_error!` tokens.

use proc_macro::TokenStream;

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
