//! A single unsigned 4-bit code, held in a u8 or, one bit wider, in an i8.

#[qkc::packed(storage = stream)]
struct U4 {
    #[bits(4)]
    q: u8,
}

#[qkc::packed(storage = stream)]
struct U4InI8 {
    #[bits(4, unsigned)]
    q: i8,
}

fn main() {
    assert_eq!(U4::LAYOUT, qkc::layout::builtin("u4").unwrap());
    assert_eq!(U4InI8::LAYOUT, U4::LAYOUT);
    assert_eq!(U4 { q: 15 }.pack(), 15);
    assert_eq!(U4InI8::unpack(15).q, 15);
}
