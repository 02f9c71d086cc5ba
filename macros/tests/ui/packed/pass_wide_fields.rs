//! Full-byte codes and more than two fields.

#[qkc::packed(storage = stream)]
struct S8 {
    #[bits(8)]
    x: i8,
}

#[qkc::packed(storage = stream)]
struct U8 {
    #[bits(8)]
    x: u8,
}

#[qkc::packed(storage = stream)]
struct U8InI16 {
    #[bits(8, unsigned)]
    x: i16,
}

#[qkc::packed(storage = byte)]
struct Quad {
    #[bits(2)]
    a: i8,
    #[bits(2)]
    b: i32,
    #[bits(2)]
    c: u16,
    #[bits(2)]
    d: u8,
}

fn main() {
    assert_eq!(S8::LAYOUT, qkc::layout::builtin("s8").unwrap());
    assert_eq!(S8 { x: -128 }.pack(), 0x80);
    assert_eq!(U8::unpack(255).x, 255);
    assert_eq!(U8InI16::unpack(200).x, 200);
    assert_eq!(Quad::LAYOUT.n_fields, 4);
    assert_eq!(
        Quad {
            a: -2,
            b: 1,
            c: 3,
            d: 0
        }
        .pack(),
        0b10_01_11_00
    );
}
