//! Layouts declared with `#[qkc::packed]` equal the built-in descriptors, and
//! their `pack`/`unpack` agree with `LayoutDesc`'s packer at run time,
//! exhaustively.

use qkc::layout::{builtin, LayoutDesc, Storage, Q3P5_BYTE, Q3P5_STREAM};

#[qkc::packed(storage = stream)]
struct Q3p5 {
    #[bits(4)]
    hi: i8,
    #[bits(3)]
    lo: i8,
}

#[qkc::packed(storage = byte)]
struct Q3p5b {
    #[bits(6..=3)]
    hi: i8,
    #[bits(2..=0)]
    lo: i8,
}

#[qkc::packed(storage = stream)]
struct S2 {
    #[bits(2)]
    w: i8,
}

#[qkc::packed(storage = stream)]
struct S3 {
    #[bits(3)]
    w: i8,
}

#[qkc::packed(storage = stream)]
struct S4 {
    #[bits(4)]
    w: i8,
}

#[qkc::packed(storage = stream)]
struct U4 {
    #[bits(4)]
    w: u8,
}

#[qkc::packed(storage = stream)]
struct S8 {
    #[bits(8)]
    w: i16,
}

fn named(name: &str) -> LayoutDesc {
    builtin(name).unwrap_or_else(|| panic!("no built-in `{name}`"))
}

#[test]
fn declared_layouts_equal_the_builtins() {
    assert_eq!(Q3p5::LAYOUT, Q3P5_STREAM);
    assert_eq!(Q3p5::LAYOUT, named("q3p5"));
    assert_eq!(Q3p5b::LAYOUT, Q3P5_BYTE);
    assert_eq!(Q3p5b::LAYOUT, named("q3p5b"));
    assert_eq!(S2::LAYOUT, named("s2"));
    assert_eq!(S3::LAYOUT, named("s3"));
    assert_eq!(S4::LAYOUT, named("s4"));
    assert_eq!(U4::LAYOUT, named("u4"));
    assert_eq!(S8::LAYOUT, named("s8"));
    assert_eq!(Q3p5::LAYOUT.storage, Storage::Stream);
    assert_eq!(Q3p5b::LAYOUT.storage, Storage::Byte);
}

/// Every unit value the layout can hold, through the struct and through
/// `LayoutDesc`: both agree on every field.
fn check_units<T: Copy + std::fmt::Debug + PartialEq>(
    layout: LayoutDesc,
    unpack: fn(u8) -> T,
    pack: fn(T) -> u8,
    fields: fn(T) -> Vec<i32>,
) {
    let mut seen = std::collections::HashSet::new();
    for unit in 0..(1u32 << layout.unit_bits) {
        let v = unpack(unit as u8);
        let codes = fields(v);
        let expected: Vec<i32> = layout.fields().iter().map(|f| f.extract(unit)).collect();
        assert_eq!(codes, expected, "unit {unit:#b}");
        assert_eq!(pack(v) as u32, unit, "unit {unit:#b}");
        let mut row = vec![0u8; layout.row_bytes(layout.per_unit())];
        layout.pack_row(&codes, &mut row).unwrap();
        assert_eq!(layout.read_unit(&row, 0), unit);
        assert_eq!(unpack(pack(v)), v);
        seen.insert(codes);
    }
    // Every combination of codes is reached exactly once.
    let combos: usize = layout
        .fields()
        .iter()
        .map(|f| (f.max() - f.min() + 1) as usize)
        .product();
    assert_eq!(seen.len(), combos);
}

#[test]
fn pack_unpack_round_trip_exhaustively() {
    check_units(Q3p5::LAYOUT, Q3p5::unpack, Q3p5::pack, |v| {
        vec![v.hi.into(), v.lo.into()]
    });
    check_units(Q3p5b::LAYOUT, Q3p5b::unpack, Q3p5b::pack, |v| {
        vec![v.hi.into(), v.lo.into()]
    });
    check_units(S2::LAYOUT, S2::unpack, S2::pack, |v| vec![v.w.into()]);
    check_units(S3::LAYOUT, S3::unpack, S3::pack, |v| vec![v.w.into()]);
    check_units(S4::LAYOUT, S4::unpack, S4::pack, |v| vec![v.w.into()]);
    check_units(U4::LAYOUT, U4::unpack, U4::pack, |v| vec![v.w.into()]);
    check_units(S8::LAYOUT, S8::unpack, S8::pack, |v| vec![v.w.into()]);
}

#[test]
fn q3p5_codes_land_on_the_documented_bits() {
    // hi = bits 6..3, lo = bits 2..0.
    for hi in -8i8..=7 {
        for lo in -4i8..=3 {
            let unit = Q3p5 { hi, lo }.pack();
            assert_eq!(unit >> 7, 0);
            assert_eq!(((unit >> 3) & 0xf) as i8, hi & 0xf);
            assert_eq!((unit & 0x7) as i8, lo & 0x7);
            assert_eq!(Q3p5b { hi, lo }.pack(), unit);
        }
    }
}

#[test]
fn macro_units_pack_a_stream_row_like_the_runtime_packer() {
    // A row of K = 9 weights (odd: the last lo is padding).
    let codes = [-8, 3, 7, -4, 0, -1, 5, 2, -3];
    let mut units = Vec::new();
    for pair in codes.chunks(2) {
        let lo = pair.get(1).copied().unwrap_or(0);
        units.push(
            Q3p5 {
                hi: pair[0] as i8,
                lo: lo as i8,
            }
            .pack(),
        );
    }
    // Stream: unit j at bits 7j .. 7j+7, LSB first.
    let mut expected = vec![0u8; Q3P5_STREAM.row_bytes(9)];
    for (j, &u) in units.iter().enumerate() {
        for b in 0..7 {
            if (u >> b) & 1 == 1 {
                let bit = 7 * j + b;
                expected[bit / 8] |= 1 << (bit % 8);
            }
        }
    }
    let packed = qkc::runtime::pack::pack_codes(&Q3P5_STREAM, &codes, 1, 9).unwrap();
    assert_eq!(packed, expected);
    // Byte storage: the units themselves.
    let packed = qkc::runtime::pack::pack_codes(&Q3P5_BYTE, &codes, 1, 9).unwrap();
    assert_eq!(packed, units);
}
