//! A single signed 3-bit code.

#[qkc::packed(storage = stream)]
struct S3 {
    #[bits(3)]
    w: i8,
}

fn main() {
    assert_eq!(S3::LAYOUT, qkc::layout::builtin("s3").unwrap());
    for c in -4i8..=3 {
        assert_eq!(S3::unpack(S3 { w: c }.pack()).w, c);
    }
    assert_eq!(S3 { w: -1 }.pack(), 0b111);
}
