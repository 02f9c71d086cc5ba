//! `#[packed(storage = ...)]`: turns a struct of `#[bits(..)]` fields into a
//! `::qkc::layout::LayoutDesc` constant, `const fn` pack/unpack and an exhaustive
//! compile-time round-trip check.
//!
//! Every rule is checked while expanding, with the error on the offending
//! field, attribute or type; the generated `const _` block then re-checks the
//! result by const evaluation (a wrong layout does not compile).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, ToTokens};
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{
    Attribute, Error, Expr, ExprLit, ExprRange, Fields, Ident, Item, Lit, RangeLimits, Type,
};

/// Widest unit (the container): a unit is packed into at most one byte.
const CONTAINER_BITS: u32 = 8;
/// Most fields one unit may hold (`qkc::layout::MAX_FIELDS`).
const MAX_FIELDS: usize = 4;

/// Where units live, as named in `storage = ...`.
#[derive(Clone, Copy)]
enum Storage {
    Byte,
    Stream,
}

/// How a field's bits were given.
#[derive(Clone, Copy)]
enum Placement {
    /// `#[bits(N)]`: the width only, placed from the top of the unit down.
    Width(u32),
    /// `#[bits(MSB..=LSB)]`.
    Range { msb: u32, lsb: u32 },
}

/// One parsed field.
struct FieldSpec {
    ident: Ident,
    ty: Type,
    /// The Rust type is `i32` (no cast needed to or from codes).
    ty_is_i32: bool,
    signed: bool,
    placement: Placement,
    /// The `#[bits(..)]` argument, to put placement errors on.
    bits_tokens: TokenStream,
}

impl FieldSpec {
    fn width(&self) -> u32 {
        match self.placement {
            Placement::Width(w) => w,
            Placement::Range { msb, lsb } => msb - lsb + 1,
        }
    }

    fn code_name(&self) -> String {
        format!("{}{}", if self.signed { 's' } else { 'u' }, self.width())
    }

    fn code_min(&self) -> i32 {
        if self.signed {
            -(1i32 << (self.width() - 1))
        } else {
            0
        }
    }

    fn code_max(&self) -> i32 {
        if self.signed {
            (1i32 << (self.width() - 1)) - 1
        } else {
            (1i32 << self.width()) - 1
        }
    }
}

/// A field with its final position in the unit.
struct Placed {
    spec: FieldSpec,
    shift: u32,
}

impl Placed {
    fn msb(&self) -> u32 {
        self.shift + self.spec.width() - 1
    }

    fn mask(&self) -> u32 {
        ((1u32 << self.spec.width()) - 1) << self.shift
    }
}

/// Entry point of `#[packed]`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let storage = parse_storage(attr)?;
    let item: Item = syn::parse2(item)?;
    let mut st = match item {
        Item::Struct(st) => st,
        other => return Err(not_a_struct(&other)),
    };
    if !st.generics.params.is_empty() || st.generics.where_clause.is_some() {
        return Err(Error::new_spanned(
            &st.generics,
            "`#[packed]` structs can't be generic: the layout is fixed by the declaration",
        ));
    }
    let named = match &mut st.fields {
        Fields::Named(named) => named,
        Fields::Unnamed(unnamed) => {
            return Err(Error::new(
                unnamed.paren_token.span.join(),
                "`#[packed]` needs named fields (`struct Q { #[bits(4)] hi: i8, .. }`), \
                 not a tuple struct",
            ))
        }
        Fields::Unit => {
            return Err(Error::new_spanned(
                &st.ident,
                "`#[packed]` needs at least one `#[bits(..)]` field, found a unit struct",
            ))
        }
    };
    if named.named.is_empty() {
        return Err(Error::new_spanned(
            &st.ident,
            "`#[packed]` needs at least one `#[bits(..)]` field",
        ));
    }

    let mut specs = Vec::with_capacity(named.named.len());
    for (i, field) in named.named.iter_mut().enumerate() {
        let ident = field
            .ident
            .clone()
            .ok_or_else(|| Error::new_spanned(&*field, "expected a named field"))?;
        if i == MAX_FIELDS {
            return Err(Error::new_spanned(
                &ident,
                format!(
                    "too many fields: a packed layout holds at most {MAX_FIELDS} fields, \
                     and `{ident}` is field {}",
                    i + 1
                ),
            ));
        }
        let bits_attr = take_bits_attr(&mut field.attrs, &ident)?;
        specs.push(parse_field(ident, field.ty.clone(), &bits_attr)?);
    }

    let placed = place_fields(specs)?;
    let unit_bits = placed.iter().map(|p| p.msb() + 1).max().unwrap_or(0);

    add_missing_derives(&mut st.attrs)?;
    let generated = generate(&st.ident, storage, unit_bits, &placed);
    Ok(quote! {
        #st
        #generated
    })
}

/// Parses `storage = stream` / `storage = byte`.
fn parse_storage(attr: TokenStream) -> syn::Result<Storage> {
    let mut storage = None;
    let parser = syn::meta::parser(|meta| {
        if !meta.path.is_ident("storage") {
            return Err(meta.error(
                "unknown `packed` argument; expected `storage = stream` or `storage = byte`",
            ));
        }
        let value: Expr = meta.value()?.parse()?;
        let name = match &value {
            Expr::Path(p) => p.path.get_ident().map(Ident::to_string),
            _ => None,
        };
        storage = Some(match name.as_deref() {
            Some("stream") => Storage::Stream,
            Some("byte") => Storage::Byte,
            _ => {
                return Err(Error::new_spanned(
                    &value,
                    format!(
                        "unsupported storage `{}`; expected `stream` (units back to back, \
                         LSB first) or `byte` (one unit per byte)",
                        value.to_token_stream()
                    ),
                ))
            }
        });
        Ok(())
    });
    parser.parse2(attr)?;
    storage.ok_or_else(|| {
        Error::new(
            Span::call_site(),
            "missing storage: write `#[packed(storage = stream)]` or `#[packed(storage = byte)]`",
        )
    })
}

/// The error for an item that is not a struct, on its keyword.
fn not_a_struct(item: &Item) -> Error {
    const MSG: &str = "`#[packed]` only applies to structs with named `#[bits(..)]` fields";
    match item {
        Item::Enum(e) => Error::new_spanned(e.enum_token, MSG),
        Item::Union(u) => Error::new_spanned(u.union_token, MSG),
        Item::Fn(f) => Error::new_spanned(f.sig.fn_token, MSG),
        Item::Type(t) => Error::new_spanned(t.type_token, MSG),
        other => Error::new_spanned(other, MSG),
    }
}

/// Removes the field's `#[bits(..)]` attribute and returns it.
fn take_bits_attr(attrs: &mut Vec<Attribute>, ident: &Ident) -> syn::Result<Attribute> {
    let mut found: Option<Attribute> = None;
    let mut kept = Vec::with_capacity(attrs.len());
    for attr in attrs.drain(..) {
        if attr.path().is_ident("bits") {
            if found.is_some() {
                return Err(Error::new_spanned(
                    &attr,
                    format!("field `{ident}` has more than one `#[bits(..)]` attribute"),
                ));
            }
            found = Some(attr);
        } else {
            kept.push(attr);
        }
    }
    *attrs = kept;
    found.ok_or_else(|| {
        Error::new_spanned(
            ident,
            format!(
                "field `{ident}` needs its width: add `#[bits(N)]` (1..=8 bits) \
                 or an explicit range `#[bits(MSB..=LSB)]`"
            ),
        )
    })
}

/// Parses `#[bits(..)]` and the field type of one field.
fn parse_field(ident: Ident, ty: Type, attr: &Attribute) -> syn::Result<FieldSpec> {
    let (placement_expr, signed_override) = attr.parse_args_with(|input: ParseStream| {
        let expr: Expr = input.parse()?;
        let mut signed = None;
        if input.parse::<Option<syn::Token![,]>>()?.is_some() {
            let kw: Ident = input.parse()?;
            signed = Some(match kw.to_string().as_str() {
                "signed" => true,
                "unsigned" => false,
                _ => {
                    return Err(Error::new_spanned(
                        &kw,
                        "expected `signed` or `unsigned` after the width",
                    ))
                }
            });
            input.parse::<Option<syn::Token![,]>>()?;
        }
        Ok((expr, signed))
    })?;

    let placement = parse_placement(&ident, &placement_expr)?;
    let (ty_signed, ty_bits) = int_type(&ty).ok_or_else(|| {
        Error::new_spanned(
            &ty,
            format!(
                "unsupported type `{}` for packed field `{ident}`; use i8, i16 or i32 \
                 (signed code) or u8, u16 or u32 (unsigned code)",
                ty.to_token_stream()
            ),
        )
    })?;
    let spec = FieldSpec {
        ty_is_i32: ty_signed && ty_bits == 32,
        signed: signed_override.unwrap_or(ty_signed),
        placement,
        bits_tokens: placement_expr.to_token_stream(),
        ident,
        ty,
    };
    check_type_holds_code(&spec, ty_signed, ty_bits)?;
    Ok(spec)
}

/// `N` or `MSB..=LSB`.
fn parse_placement(ident: &Ident, expr: &Expr) -> syn::Result<Placement> {
    match expr {
        Expr::Lit(_) => {
            let width = bit_number(expr, "width")?;
            if width == 0 {
                return Err(Error::new_spanned(
                    expr,
                    format!("field `{ident}` has zero width; a field needs 1..=8 bits"),
                ));
            }
            if width > CONTAINER_BITS {
                return Err(Error::new_spanned(
                    expr,
                    format!(
                        "field `{ident}` is {width} bits wide; a packed unit (the container) \
                         holds at most {CONTAINER_BITS} bits"
                    ),
                ));
            }
            Ok(Placement::Width(width))
        }
        Expr::Range(ExprRange {
            start: Some(start),
            limits,
            end: Some(end),
            ..
        }) => {
            if let RangeLimits::HalfOpen(_) = limits {
                return Err(Error::new_spanned(
                    expr,
                    "write the bit range inclusive and high bit first, as `MSB..=LSB` \
                     (e.g. `#[bits(6..=3)]`)",
                ));
            }
            let msb = bit_number(start, "bit position")?;
            let lsb = bit_number(end, "bit position")?;
            if msb < lsb {
                return Err(Error::new_spanned(
                    expr,
                    format!(
                        "bit ranges are written high bit first: `#[bits({lsb}..={msb})]` \
                         instead of `{msb}..={lsb}`"
                    ),
                ));
            }
            if msb >= CONTAINER_BITS {
                return Err(Error::new_spanned(
                    expr,
                    format!(
                        "bits {msb}..={lsb} of field `{ident}` are outside the \
                         {CONTAINER_BITS}-bit container (bits 7..=0)"
                    ),
                ));
            }
            Ok(Placement::Range { msb, lsb })
        }
        Expr::Unary(syn::ExprUnary {
            op: syn::UnOp::Neg(_),
            ..
        }) => Err(Error::new_spanned(
            expr,
            format!("field `{ident}` has a negative width; a field needs 1..=8 bits"),
        )),
        _ => Err(Error::new_spanned(
            expr,
            "expected a width in bits such as `#[bits(4)]` or a bit range such as \
             `#[bits(6..=3)]`",
        )),
    }
}

/// A non-negative integer literal inside `#[bits(..)]`.
fn bit_number(expr: &Expr, what: &str) -> syn::Result<u32> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => int
            .base10_parse::<u32>()
            .map_err(|_| Error::new_spanned(int, format!("{what} `{int}` is not a small integer"))),
        Expr::Unary(syn::ExprUnary {
            op: syn::UnOp::Neg(_),
            ..
        }) => Err(Error::new_spanned(
            expr,
            format!("a {what} can't be negative"),
        )),
        _ => Err(Error::new_spanned(
            expr,
            format!(
                "expected an integer {what}, found `{}`",
                expr.to_token_stream()
            ),
        )),
    }
}

/// `(signed, bits)` of a supported field type.
fn int_type(ty: &Type) -> Option<(bool, u32)> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    Some(match p.path.get_ident()?.to_string().as_str() {
        "i8" => (true, 8),
        "i16" => (true, 16),
        "i32" => (true, 32),
        "u8" => (false, 8),
        "u16" => (false, 16),
        "u32" => (false, 32),
        _ => return None,
    })
}

/// The field type must hold every code: signed codes need a signed type; an
/// unsigned N-bit code fits an unsigned type of N bits or more, or a signed
/// type of more than N bits.
fn check_type_holds_code(spec: &FieldSpec, ty_signed: bool, ty_bits: u32) -> syn::Result<()> {
    let w = spec.width();
    let (ident, ty) = (&spec.ident, spec.ty.to_token_stream());
    let code = spec.code_name();
    let (min, max) = (spec.code_min(), spec.code_max());
    if spec.signed && !ty_signed {
        return Err(Error::new_spanned(
            &spec.ty,
            format!(
                "field `{ident}` holds the signed code {code} ({min}..={max}), but `{ty}` \
                 can't hold negative codes; use i8, i16 or i32, or write \
                 `#[bits({w}, unsigned)]` for an unsigned code"
            ),
        ));
    }
    if !spec.signed && ty_signed && w >= ty_bits {
        let (tmin, tmax) = (-(1i64 << (ty_bits - 1)), (1i64 << (ty_bits - 1)) - 1);
        return Err(Error::new_spanned(
            &spec.ty,
            format!(
                "field `{ident}` holds the unsigned code {code} ({min}..={max}), but `{ty}` \
                 only holds {tmin}..={tmax}; use u8, or a signed type wider than {w} bits \
                 such as i16"
            ),
        ));
    }
    Ok(())
}

/// Gives every field its shift: implicit widths from the top of the unit
/// down, explicit ranges as written.
fn place_fields(specs: Vec<FieldSpec>) -> syn::Result<Vec<Placed>> {
    let explicit = matches!(
        specs.first().map(|s| s.placement),
        Some(Placement::Range { .. })
    );
    for s in &specs {
        if matches!(s.placement, Placement::Range { .. }) != explicit {
            return Err(Error::new_spanned(
                &s.bits_tokens,
                format!(
                    "field `{}` mixes styles: either every field has an explicit bit range \
                     (`#[bits(MSB..=LSB)]`) or none does (`#[bits(N)]`)",
                    s.ident
                ),
            ));
        }
    }

    if explicit {
        let mut placed: Vec<Placed> = Vec::with_capacity(specs.len());
        for spec in specs {
            let Placement::Range { lsb, .. } = spec.placement else {
                continue;
            };
            let p = Placed { spec, shift: lsb };
            if let Some(q) = placed.iter().find(|q| q.mask() & p.mask() != 0) {
                return Err(Error::new_spanned(
                    &p.spec.bits_tokens,
                    format!(
                        "bits {}..={} of field `{}` overlap bits {}..={} of field `{}`",
                        p.msb(),
                        p.shift,
                        p.spec.ident,
                        q.msb(),
                        q.shift,
                        q.spec.ident
                    ),
                ));
            }
            placed.push(p);
        }
        return Ok(placed);
    }

    let total: u32 = specs.iter().map(FieldSpec::width).sum();
    let mut used = 0u32;
    for s in &specs {
        used += s.width();
        if used > CONTAINER_BITS {
            let parts: Vec<String> = specs
                .iter()
                .map(|s| format!("{} {}", s.ident, s.width()))
                .collect();
            return Err(Error::new_spanned(
                &s.bits_tokens,
                format!(
                    "the fields need {total} bits ({}), but a packed unit (the container) \
                     holds at most {CONTAINER_BITS} bits; `{}` crosses the limit",
                    parts.join(" + "),
                    s.ident
                ),
            ));
        }
    }
    let mut top = total;
    Ok(specs
        .into_iter()
        .map(|spec| {
            top -= spec.width();
            Placed { spec, shift: top }
        })
        .collect())
}

/// Adds `#[derive(Clone, Copy, Debug, PartialEq, Eq)]`, minus what the user
/// already derives.
fn add_missing_derives(attrs: &mut Vec<Attribute>) -> syn::Result<()> {
    let mut have = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("derive")) {
        let paths =
            attr.parse_args_with(Punctuated::<syn::Path, syn::Token![,]>::parse_terminated)?;
        have.extend(
            paths
                .iter()
                .filter_map(|p| p.segments.last().map(|s| s.ident.to_string())),
        );
    }
    let wanted: [(&str, TokenStream); 5] = [
        ("Clone", quote!(::core::clone::Clone)),
        ("Copy", quote!(::core::marker::Copy)),
        ("Debug", quote!(::core::fmt::Debug)),
        ("PartialEq", quote!(::core::cmp::PartialEq)),
        ("Eq", quote!(::core::cmp::Eq)),
    ];
    let missing: Vec<TokenStream> = wanted
        .into_iter()
        .filter(|(name, _)| !have.iter().any(|h| h == name))
        .map(|(_, path)| path)
        .collect();
    if !missing.is_empty() {
        attrs.insert(0, syn::parse_quote!(#[derive(#(#missing),*)]));
    }
    Ok(())
}

/// `expr as ty`, or `expr` alone when `ty` is `i32` (keeps clippy quiet).
fn cast(expr: TokenStream, to_i32: bool, ty: &Type) -> TokenStream {
    if to_i32 {
        expr
    } else {
        quote!(#expr as #ty)
    }
}

/// The impl block and the compile-time check.
fn generate(name: &Ident, storage: Storage, unit_bits: u32, placed: &[Placed]) -> TokenStream {
    let n_fields = placed.len();
    let unit_bits_u8 = unit_bits as u8;
    let n_fields_u8 = n_fields as u8;
    let storage_tokens = match storage {
        Storage::Byte => quote!(::qkc::layout::Storage::Byte),
        Storage::Stream => quote!(::qkc::layout::Storage::Stream),
    };
    let mut descs: Vec<TokenStream> = placed
        .iter()
        .map(|p| {
            let signed = p.spec.signed;
            let bits = p.spec.width() as u8;
            let shift = p.shift as u8;
            quote!(::qkc::layout::FieldDesc { signed: #signed, bits: #bits, shift: #shift })
        })
        .collect();
    descs.resize(MAX_FIELDS, quote!(::qkc::layout::FieldDesc::EMPTY));

    let idents: Vec<&Ident> = placed.iter().map(|p| &p.spec.ident).collect();
    let indices: Vec<usize> = (0..n_fields).collect();
    let pack_codes: Vec<TokenStream> = placed
        .iter()
        .map(|p| {
            let f = &p.spec.ident;
            cast(quote!(self.#f), p.spec.ty_is_i32, &syn::parse_quote!(i32))
        })
        .collect();
    let unpack_values: Vec<TokenStream> = placed
        .iter()
        .zip(&indices)
        .map(|(p, i)| {
            cast(
                quote!(Self::LAYOUT.fields[#i].extract(unit)),
                p.spec.ty_is_i32,
                &p.spec.ty,
            )
        })
        .collect();

    let description = describe(storage, placed);
    let layout_doc = format!("The packed layout `{description}` ({unit_bits}-bit unit).");
    let check = generate_check(name, unit_bits, placed);

    quote! {
        impl #name {
            #[doc = #layout_doc]
            pub const LAYOUT: ::qkc::layout::LayoutDesc = ::qkc::layout::LayoutDesc {
                unit_bits: #unit_bits_u8,
                n_fields: #n_fields_u8,
                fields: [#(#descs),*],
                storage: #storage_tokens,
            };

            /// Packs the fields into one unit (the low `LAYOUT.unit_bits` bits of
            /// the byte). Each value keeps only its field's low bits.
            pub const fn pack(self) -> u8 {
                let mut unit: u32 = 0;
                #( unit = Self::LAYOUT.fields[#indices].insert(unit, #pack_codes); )*
                unit as u8
            }

            /// Unpacks one unit; bits outside every field are ignored.
            pub const fn unpack(unit: u8) -> Self {
                let unit = unit as u32;
                Self { #( #idents: #unpack_values, )* }
            }
        }

        #check
    }
}

/// The canonical spelling, as `LayoutDesc::describe` writes it.
fn describe(storage: Storage, placed: &[Placed]) -> String {
    let storage = match storage {
        Storage::Byte => "byte",
        Storage::Stream => "stream",
    };
    let parts: Vec<String> = placed
        .iter()
        .map(|p| {
            format!(
                "{}: {} @ {}..{}",
                p.spec.ident,
                p.spec.code_name(),
                p.msb(),
                p.shift
            )
        })
        .collect();
    format!("{{ {} }} {storage}", parts.join(", "))
}

/// `const _: () = { .. };` checking, by const evaluation:
/// - the descriptor matches the declaration (widths, shifts, signedness);
/// - every combination of codes round-trips through pack/unpack and sets no
///   bit outside the fields;
/// - each field alone writes exactly its own bits (no bleeding);
/// - every unit value survives unpack then pack, up to unused bits.
fn generate_check(name: &Ident, unit_bits: u32, placed: &[Placed]) -> TokenStream {
    let used_mask: u32 = placed.iter().map(Placed::mask).fold(0, |a, m| a | m);
    let unit_limit: u32 = 1u32 << unit_bits;
    let unit_bits_u8 = unit_bits as u8;
    let n_fields_u8 = placed.len() as u8;
    let vars: Vec<Ident> = (0..placed.len())
        .map(|i| format_ident!("__qkc_code{}", i))
        .collect();

    let desc_checks: Vec<TokenStream> = placed
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (signed, bits, shift) = (p.spec.signed, p.spec.width() as u8, p.shift as u8);
            let msg = format!(
                "qkc::packed: `{name}::LAYOUT` does not describe field `{}` as declared",
                p.spec.ident
            );
            quote! {
                assert!(
                    __qkc_layout.fields[#i].signed == #signed
                        && __qkc_layout.fields[#i].bits == #bits
                        && __qkc_layout.fields[#i].shift == #shift,
                    #msg
                );
            }
        })
        .collect();

    // Innermost body of the exhaustive loops.
    let build_fields: Vec<TokenStream> = placed
        .iter()
        .zip(&vars)
        .map(|(p, v)| {
            let f = &p.spec.ident;
            let value = cast(quote!(#v), p.spec.ty_is_i32, &p.spec.ty);
            quote!(#f: #value)
        })
        .collect();
    let roundtrip_checks: Vec<TokenStream> = placed
        .iter()
        .zip(&vars)
        .map(|(p, v)| {
            let f = &p.spec.ident;
            let back = cast(
                quote!(__qkc_back.#f),
                p.spec.ty_is_i32,
                &syn::parse_quote!(i32),
            );
            let msg = format!(
                "qkc::packed: field `{f}` of `{name}` does not round-trip through pack/unpack"
            );
            quote!(assert!(#back == #v, #msg);)
        })
        .collect();
    let overflow_msg =
        format!("qkc::packed: `{name}::pack` sets bits outside its {unit_bits}-bit unit");
    let unused_msg = format!("qkc::packed: `{name}::pack` sets bits that belong to no field");
    let mut body = quote! {
        let __qkc_unit = #name { #(#build_fields),* }.pack() as u32;
        assert!(__qkc_unit < #unit_limit, #overflow_msg);
        assert!(__qkc_unit & !#used_mask == 0, #unused_msg);
        let __qkc_back = #name::unpack(__qkc_unit as u8);
        #(#roundtrip_checks)*
    };
    for (p, v) in placed.iter().zip(&vars).rev() {
        let (min, max) = (p.spec.code_min(), p.spec.code_max());
        body = quote! {
            let mut #v: i32 = #min;
            while #v <= #max {
                #body
                #v += 1;
            }
        };
    }

    // Each field alone: only its own bits, holding its code's low bits.
    let isolation: Vec<TokenStream> = placed
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let f = &p.spec.ident;
            let (min, max) = (p.spec.code_min(), p.spec.code_max());
            let (mask, shift) = (p.mask(), p.shift);
            let field_mask = (1u32 << p.spec.width()) - 1;
            let fields: Vec<TokenStream> = placed
                .iter()
                .enumerate()
                .map(|(j, q)| {
                    let g = &q.spec.ident;
                    if i == j {
                        let value = cast(quote!(__qkc_c), q.spec.ty_is_i32, &q.spec.ty);
                        quote!(#g: #value)
                    } else {
                        quote!(#g: 0)
                    }
                })
                .collect();
            let bleed_msg = format!(
                "qkc::packed: field `{f}` of `{name}` bleeds outside bits {}..={}",
                p.msb(),
                p.shift
            );
            let place_msg = format!(
                "qkc::packed: field `{f}` of `{name}` is not stored at bits {}..={}",
                p.msb(),
                p.shift
            );
            quote! {
                let mut __qkc_c: i32 = #min;
                while __qkc_c <= #max {
                    let __qkc_unit = #name { #(#fields),* }.pack() as u32;
                    assert!(__qkc_unit & !#mask == 0, #bleed_msg);
                    assert!(__qkc_unit >> #shift == (__qkc_c as u32) & #field_mask, #place_msg);
                    __qkc_c += 1;
                }
            }
        })
        .collect();

    let units_msg = format!("qkc::packed: some unit of `{name}` does not survive unpack then pack");
    let desc_msg = format!("qkc::packed: `{name}::LAYOUT` has the wrong unit width or field count");
    quote! {
        #[allow(clippy::identity_op, clippy::eq_op)]
        const _: () = {
            let __qkc_layout = #name::LAYOUT;
            assert!(
                __qkc_layout.unit_bits == #unit_bits_u8 && __qkc_layout.n_fields == #n_fields_u8,
                #desc_msg
            );
            #(#desc_checks)*
            #body
            #(#isolation)*
            let mut __qkc_u: u32 = 0;
            while __qkc_u < #unit_limit {
                let __qkc_again = #name::unpack(__qkc_u as u8).pack() as u32;
                assert!(__qkc_again == __qkc_u & #used_mask, #units_msg);
                __qkc_u += 1;
            }
        };
    }
}
