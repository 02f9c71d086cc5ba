//! Explicit `MSB..=LSB` ranges, in any field order and with unused bits.

#[qkc::packed(storage = stream)]
struct Explicit {
    #[bits(6..=3)]
    hi: i8,
    #[bits(2..=0)]
    lo: i8,
}

/// Low field first in weight order, a gap at bit 3, an 8-bit unit.
#[qkc::packed(storage = byte)]
struct Swapped {
    #[bits(2..=0)]
    a: i16,
    #[bits(7..=4, unsigned)]
    b: u32,
}

fn main() {
    assert_eq!(Explicit::LAYOUT, qkc::layout::Q3P5_STREAM);
    let l = Swapped::LAYOUT;
    assert_eq!(l.unit_bits, 8);
    assert_eq!(
        (l.fields[0].shift, l.fields[0].bits, l.fields[0].signed),
        (0, 3, true)
    );
    assert_eq!(
        (l.fields[1].shift, l.fields[1].bits, l.fields[1].signed),
        (4, 4, false)
    );
    assert_eq!(Swapped { a: -1, b: 9 }.pack(), 0b1001_0111);
    // Bit 3 is no field's: unpack ignores it.
    assert_eq!(Swapped::unpack(0b1001_1111), Swapped { a: -1, b: 9 });
}
