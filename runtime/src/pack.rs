//! Packing integer codes into a [`LayoutDesc`]'s bytes and back, with the
//! length and layout checks that `LayoutDesc::pack`/`unpack` leave to callers.
//!
//! A `[rows, k]` code matrix (row-major `i32`) packs into `rows` byte-aligned rows
//! of `layout.row_bytes(k)` bytes each. When `k` is not a multiple of the fields
//! per unit, the last unit's unused fields (and, for stream storage, the bits
//! after the last unit in the row's last byte) are written 0.

use qkc_dsl::layout::{CodeOutOfRange, LayoutDesc, LayoutError, MAX_FIELDS};

/// Why codes could not be packed or unpacked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    #[error("invalid layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("a [{rows}, {k}] code matrix has {expected} codes, got {got}")]
    CodesLen {
        rows: usize,
        k: usize,
        expected: usize,
        got: usize,
    },
    #[error("a packed [{rows}, {k}] tensor in layout `{layout}` is {expected} bytes, got {got}")]
    PackedLen {
        layout: String,
        rows: usize,
        k: usize,
        expected: usize,
        got: usize,
    },
    #[error("a [{rows}, {k}] tensor is too large to address")]
    TooLarge { rows: usize, k: usize },
    #[error(transparent)]
    Code(#[from] CodeOutOfRange),
}

/// Checks a descriptor against every rule of [`LayoutDesc::from_fields`]
/// (a hand-built `LayoutDesc` may break them; the built-ins never do).
pub fn validate_layout(layout: &LayoutDesc) -> Result<(), LayoutError> {
    let n = layout.n_fields as usize;
    if n == 0 {
        return Err(LayoutError::NoFields);
    }
    if n > MAX_FIELDS {
        return Err(LayoutError::TooManyFields(n));
    }
    LayoutDesc::from_fields(layout.unit_bits as u32, layout.fields(), layout.storage).map(|_| ())
}

/// `rows * k`, or an error when it overflows.
fn element_count(rows: usize, k: usize) -> Result<usize, PackError> {
    rows.checked_mul(k).ok_or(PackError::TooLarge { rows, k })
}

/// Bytes of a packed `[rows, k]` tensor, checked for overflow.
pub fn packed_len(layout: &LayoutDesc, rows: usize, k: usize) -> Result<usize, PackError> {
    validate_layout(layout)?;
    element_count(rows, k)?;
    let units = k.div_ceil(layout.n_fields as usize);
    let row_bytes = units
        .checked_mul(layout.unit_bits as usize)
        .map(|bits| match layout.storage {
            qkc_dsl::layout::Storage::Byte => units,
            qkc_dsl::layout::Storage::Stream => bits.div_ceil(8),
        })
        .ok_or(PackError::TooLarge { rows, k })?;
    row_bytes
        .checked_mul(rows)
        .ok_or(PackError::TooLarge { rows, k })
}

/// Packs a row-major `[rows, k]` matrix of codes. Every code must lie in the
/// range of the field that holds its position (`k % fields per unit`).
pub fn pack_codes(
    layout: &LayoutDesc,
    codes: &[i32],
    rows: usize,
    k: usize,
) -> Result<Vec<u8>, PackError> {
    packed_len(layout, rows, k)?;
    let expected = element_count(rows, k)?;
    if codes.len() != expected {
        return Err(PackError::CodesLen {
            rows,
            k,
            expected,
            got: codes.len(),
        });
    }
    Ok(layout.pack(codes, rows, k)?)
}

/// Unpacks a `[rows, k]` packed buffer into row-major codes. Padding fields are
/// not returned.
pub fn unpack_codes(
    layout: &LayoutDesc,
    packed: &[u8],
    rows: usize,
    k: usize,
) -> Result<Vec<i32>, PackError> {
    let expected = packed_len(layout, rows, k)?;
    if packed.len() != expected {
        return Err(PackError::PackedLen {
            layout: layout.describe(),
            rows,
            k,
            expected,
            got: packed.len(),
        });
    }
    Ok(layout.unpack(packed, rows, k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use qkc_dsl::layout::{builtin, FieldDesc, Storage, BUILTIN_NAMES, Q3P5_BYTE, Q3P5_STREAM};

    /// Every built-in layout, plus the byte/stream twin of each scalar one.
    fn all_layouts() -> Vec<LayoutDesc> {
        let mut out = Vec::new();
        for name in BUILTIN_NAMES {
            let Some(l) = builtin(name) else {
                panic!("built-in `{name}` missing")
            };
            out.push(l);
            let twin = LayoutDesc {
                storage: match l.storage {
                    Storage::Byte => Storage::Stream,
                    Storage::Stream => Storage::Byte,
                },
                ..l
            };
            if !out.contains(&twin) {
                out.push(twin);
            }
        }
        out
    }

    /// A deterministic, mostly non-zero background code for position `i`.
    fn background(layout: &LayoutDesc, i: usize) -> i32 {
        let f = layout.field_of(i);
        let span = (f.max() - f.min() + 1) as usize;
        f.min() + ((i * 7 + 3) % span) as i32
    }

    #[test]
    fn every_code_of_every_field_at_every_position_round_trips() {
        for layout in all_layouts() {
            for k in [1usize, 2, 3, 5, 7, 8, 9, 16, 17, 33, 40] {
                let base: Vec<i32> = (0..k).map(|i| background(&layout, i)).collect();
                for pos in 0..k {
                    let f = layout.field_of(pos);
                    for code in f.min()..=f.max() {
                        let mut codes = base.clone();
                        codes[pos] = code;
                        let packed = pack_codes(&layout, &codes, 1, k).unwrap();
                        assert_eq!(packed.len(), layout.row_bytes(k));
                        let back = unpack_codes(&layout, &packed, 1, k).unwrap();
                        assert_eq!(back, codes, "{layout} k={k} pos={pos} code={code}");
                    }
                }
                // Several rows: each row starts on a byte boundary.
                let rows = 3;
                // Same field as position `i % k`, different code per row.
                let codes: Vec<i32> = (0..rows * k)
                    .map(|i| background(&layout, i % k + (i / k) * layout.per_unit() * 3))
                    .collect();
                let packed = pack_codes(&layout, &codes, rows, k).unwrap();
                assert_eq!(packed.len(), rows * layout.row_bytes(k));
                assert_eq!(unpack_codes(&layout, &packed, rows, k).unwrap(), codes);
            }
        }
    }

    #[test]
    fn padding_bits_are_zero() {
        for layout in all_layouts() {
            for k in [1usize, 3, 5, 9, 17, 33] {
                // -1 (signed) or max (unsigned) sets every bit of a field.
                let codes: Vec<i32> = (0..k)
                    .map(|i| {
                        let f = layout.field_of(i);
                        if f.signed {
                            -1
                        } else {
                            f.max()
                        }
                    })
                    .collect();
                let packed = pack_codes(&layout, &codes, 1, k).unwrap();
                let used_bits: usize = (0..k).map(|i| layout.field_of(i).bits as usize).sum();
                assert_eq!(
                    packed
                        .iter()
                        .map(|b| b.count_ones() as usize)
                        .sum::<usize>(),
                    used_bits,
                    "{layout} k={k}: only the fields' bits may be set"
                );
                let last = layout.units(k) - 1;
                let unit = layout.read_unit(&packed, last);
                for (fi, f) in layout.fields().iter().enumerate() {
                    if last * layout.per_unit() + fi >= k {
                        assert_eq!(f.extract(unit), 0, "{layout} k={k}: padding field {fi}");
                    }
                }
            }
        }
    }

    #[test]
    fn q3p5_known_bytes() {
        // Units: (hi=-8, lo=3) = 1000_011 = 0x43, (hi=7, lo=-4) = 0111_100 = 0x3c.
        let codes = [-8, 3, 7, -4];
        assert_eq!(
            pack_codes(&Q3P5_BYTE, &codes, 1, 4).unwrap(),
            vec![0x43, 0x3c]
        );
        // Stream: unit 0 in bits 0..7, unit 1 in bits 7..14.
        let s = pack_codes(&Q3P5_STREAM, &codes, 1, 4).unwrap();
        assert_eq!(s, vec![0x43 | (0x3c << 7) as u8, (0x3c >> 1) as u8]);
        assert_eq!(s, vec![0x43, 0x1e]);
        // Odd K: the lone last weight is `hi`, `lo` is padding.
        assert_eq!(
            pack_codes(&Q3P5_BYTE, &[-8, 3, 7], 1, 3).unwrap(),
            vec![0x43, 0x38]
        );
    }

    #[test]
    fn errors_instead_of_panics() {
        let l = Q3P5_STREAM;
        assert!(matches!(
            pack_codes(&l, &[1, 2, 3], 1, 4),
            Err(PackError::CodesLen {
                expected: 4,
                got: 3,
                ..
            })
        ));
        assert!(matches!(
            pack_codes(&l, &[1, 2, 3, 4], 1, 4),
            Err(PackError::Code(CodeOutOfRange {
                index: 3,
                code: 4,
                ..
            }))
        ));
        assert!(matches!(
            unpack_codes(&l, &[0u8; 3], 1, 4),
            Err(PackError::PackedLen {
                expected: 2,
                got: 3,
                ..
            })
        ));
        let broken = LayoutDesc { n_fields: 0, ..l };
        assert_eq!(
            pack_codes(&broken, &[], 0, 0),
            Err(PackError::Layout(LayoutError::NoFields))
        );
        let overlapping = LayoutDesc {
            fields: [
                FieldDesc {
                    signed: true,
                    bits: 4,
                    shift: 2,
                },
                FieldDesc {
                    signed: true,
                    bits: 3,
                    shift: 0,
                },
                FieldDesc::EMPTY,
                FieldDesc::EMPTY,
            ],
            ..l
        };
        assert!(matches!(
            unpack_codes(&overlapping, &[0, 0], 1, 4),
            Err(PackError::Layout(LayoutError::Overlap { .. }))
        ));
        assert!(matches!(
            packed_len(&l, usize::MAX, 2),
            Err(PackError::TooLarge { .. })
        ));
    }
}
