//! The flagship 3.5-bit pair, in both storages, equals the built-in layouts.

#[qkc::packed(storage = stream)]
struct Q3p5 {
    #[bits(4)]
    hi: i8,
    #[bits(3)]
    lo: i8,
}

/// Doc comments and extra derives are kept.
#[qkc::packed(storage = byte)]
#[derive(Hash, Clone)]
pub struct Q3p5Byte {
    #[bits(4)]
    pub hi: i8,
    #[bits(3)]
    pub lo: i8,
}

const PACKED: u8 = Q3p5 { hi: -8, lo: 3 }.pack();
const UNPACKED: Q3p5 = Q3p5::unpack(0b100_0011);

fn main() {
    assert_eq!(Q3p5::LAYOUT, qkc::layout::Q3P5_STREAM);
    assert_eq!(Q3p5Byte::LAYOUT, qkc::layout::Q3P5_BYTE);
    assert_eq!(PACKED, 0b100_0011);
    assert_eq!(UNPACKED, Q3p5 { hi: -8, lo: 3 });
    let b = Q3p5Byte { hi: 7, lo: -4 };
    assert_eq!(Q3p5Byte::unpack(b.pack()), b);
    let mut set = std::collections::HashSet::new();
    set.insert(b);
    assert!(set.contains(&Q3p5Byte { hi: 7, lo: -4 }));
}
