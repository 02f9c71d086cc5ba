//! Packed weight layouts: the one descriptor that the DSL, the `#[packed]` macro,
//! the packers and every backend read.
//!
//! A layout packs integer *codes* into *units*. A unit is 2..=8 bits wide and holds
//! one or more fields; each field is a signed or unsigned code with its own bit
//! range inside the unit. Field 0 holds the weight at the even position of a pair
//! (the 3.5-bit `hi`), field 1 the next one, and so on: a unit of `f` fields covers
//! `f` consecutive weights along K.
//!
//! Storage decides where unit `j` of a row lives:
//! - [`Storage::Byte`]: unit `j` is byte `j` of the row (bits above `unit_bits` are 0);
//! - [`Storage::Stream`]: unit `j` occupies bits `j*unit_bits .. (j+1)*unit_bits` of
//!   the row, least significant bit first (bit `b` is bit `b % 8` of byte `b / 8`).
//!
//! Every row starts on a byte boundary, so a `[N, K]` tensor occupies
//! `N * row_bytes(K)` bytes. When K is not a multiple of the fields per unit, the
//! last unit's unused fields are padding: packers write 0 there and kernels never
//! read them.

use std::fmt;

/// Maximum number of fields in one unit.
pub const MAX_FIELDS: usize = 4;

/// One code inside a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FieldDesc {
    /// Two's-complement signed code (`s4`) or unsigned (`u4`).
    pub signed: bool,
    /// Width in bits, 1..=8.
    pub bits: u8,
    /// Position of the field's least significant bit inside the unit.
    pub shift: u8,
}

impl FieldDesc {
    /// An empty slot (used to pad the fixed-size field array).
    pub const EMPTY: FieldDesc = FieldDesc {
        signed: false,
        bits: 0,
        shift: 0,
    };

    /// Smallest code value.
    pub const fn min(&self) -> i32 {
        if self.signed {
            -(1 << (self.bits - 1))
        } else {
            0
        }
    }

    /// Largest code value.
    pub const fn max(&self) -> i32 {
        if self.signed {
            (1 << (self.bits - 1)) - 1
        } else {
            (1 << self.bits) - 1
        }
    }

    /// Mask of the field's bits, before shifting.
    pub const fn mask(&self) -> u32 {
        (1u32 << self.bits) - 1
    }

    /// Extracts this field's code from a unit.
    pub const fn extract(&self, unit: u32) -> i32 {
        let raw = (unit >> self.shift) & self.mask();
        if self.signed && (raw >> (self.bits - 1)) & 1 == 1 {
            raw as i32 - (1 << self.bits)
        } else {
            raw as i32
        }
    }

    /// Inserts `code` into `unit` (the field's bits must be zero in `unit`).
    /// The code must be in `min()..=max()`.
    pub const fn insert(&self, unit: u32, code: i32) -> u32 {
        unit | (((code as u32) & self.mask()) << self.shift)
    }

    /// Spelling of the code type: `s4`, `u3`.
    pub fn type_name(&self) -> String {
        format!("{}{}", if self.signed { 's' } else { 'u' }, self.bits)
    }
}

/// Where units live in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    /// One unit per byte.
    Byte,
    /// Units packed back to back, LSB first, each row starting on a byte boundary.
    Stream,
}

impl Storage {
    pub const fn name(&self) -> &'static str {
        match self {
            Storage::Byte => "byte",
            Storage::Stream => "stream",
        }
    }
}

/// A packed layout. `const`-constructible so that macros can emit it as a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayoutDesc {
    /// Bits of one unit, 1..=8.
    pub unit_bits: u8,
    /// Number of used entries in `fields`.
    pub n_fields: u8,
    /// Fields in weight order; entries past `n_fields` are [`FieldDesc::EMPTY`].
    pub fields: [FieldDesc; MAX_FIELDS],
    pub storage: Storage,
}

/// A layout that breaks one of the descriptor's rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("a layout needs at least one field")]
    NoFields,
    #[error("a layout has at most {MAX_FIELDS} fields, found {0}")]
    TooManyFields(usize),
    #[error("field {field} has width {bits}; widths must be 1..=8 bits")]
    BadWidth { field: usize, bits: u32 },
    #[error("field {field} occupies bits {lo}..={hi}, outside the {unit_bits}-bit unit")]
    OutOfRange {
        field: usize,
        lo: u32,
        hi: u32,
        unit_bits: u32,
    },
    #[error("fields {a} and {b} overlap")]
    Overlap { a: usize, b: usize },
    #[error("the unit is {0} bits wide; units hold at most 8 bits")]
    UnitTooWide(u32),
}

impl LayoutDesc {
    /// A single scalar code per unit.
    pub const fn scalar(signed: bool, bits: u8, storage: Storage) -> LayoutDesc {
        let mut fields = [FieldDesc::EMPTY; MAX_FIELDS];
        fields[0] = FieldDesc {
            signed,
            bits,
            shift: 0,
        };
        LayoutDesc {
            unit_bits: bits,
            n_fields: 1,
            fields,
            storage,
        }
    }

    /// Two codes sharing one unit: `hi` in the upper bits, `lo` in the lower bits.
    pub const fn pair(hi: (bool, u8), lo: (bool, u8), storage: Storage) -> LayoutDesc {
        let mut fields = [FieldDesc::EMPTY; MAX_FIELDS];
        fields[0] = FieldDesc {
            signed: hi.0,
            bits: hi.1,
            shift: lo.1,
        };
        fields[1] = FieldDesc {
            signed: lo.0,
            bits: lo.1,
            shift: 0,
        };
        LayoutDesc {
            unit_bits: hi.1 + lo.1,
            n_fields: 2,
            fields,
            storage,
        }
    }

    /// Builds a descriptor from explicit fields, checking every rule.
    pub fn from_fields(
        unit_bits: u32,
        fields: &[FieldDesc],
        storage: Storage,
    ) -> Result<LayoutDesc, LayoutError> {
        if fields.is_empty() {
            return Err(LayoutError::NoFields);
        }
        if fields.len() > MAX_FIELDS {
            return Err(LayoutError::TooManyFields(fields.len()));
        }
        if unit_bits > 8 {
            return Err(LayoutError::UnitTooWide(unit_bits));
        }
        for (i, f) in fields.iter().enumerate() {
            if f.bits == 0 || f.bits > 8 {
                return Err(LayoutError::BadWidth {
                    field: i,
                    bits: f.bits as u32,
                });
            }
            let hi = f.shift as u32 + f.bits as u32 - 1;
            if hi >= unit_bits {
                return Err(LayoutError::OutOfRange {
                    field: i,
                    lo: f.shift as u32,
                    hi,
                    unit_bits,
                });
            }
            for (j, g) in fields.iter().enumerate().take(i) {
                let a = (f.mask()) << f.shift;
                let b = (g.mask()) << g.shift;
                if a & b != 0 {
                    return Err(LayoutError::Overlap { a: j, b: i });
                }
            }
        }
        let mut arr = [FieldDesc::EMPTY; MAX_FIELDS];
        arr[..fields.len()].copy_from_slice(fields);
        Ok(LayoutDesc {
            unit_bits: unit_bits as u8,
            n_fields: fields.len() as u8,
            fields: arr,
            storage,
        })
    }

    /// The used fields.
    pub fn fields(&self) -> &[FieldDesc] {
        &self.fields[..self.n_fields as usize]
    }

    /// Weights per unit.
    pub const fn per_unit(&self) -> usize {
        self.n_fields as usize
    }

    /// Field that holds weight `k` (the position of `k` inside its unit).
    pub fn field_of(&self, k: usize) -> &FieldDesc {
        &self.fields[k % self.n_fields as usize]
    }

    /// Units needed for a row of `k` weights.
    pub const fn units(&self, k: usize) -> usize {
        k.div_ceil(self.n_fields as usize)
    }

    /// Bytes of one packed row of `k` weights.
    pub const fn row_bytes(&self, k: usize) -> usize {
        match self.storage {
            Storage::Byte => self.units(k),
            Storage::Stream => (self.units(k) * self.unit_bits as usize).div_ceil(8),
        }
    }

    /// Bytes of a packed `[rows, k]` tensor.
    pub const fn tensor_bytes(&self, rows: usize, k: usize) -> usize {
        rows * self.row_bytes(k)
    }

    /// Storage bits per weight when K is a multiple of the fields per unit.
    pub fn bits_per_weight(&self) -> f64 {
        match self.storage {
            Storage::Byte => 8.0 / self.n_fields as f64,
            Storage::Stream => self.unit_bits as f64 / self.n_fields as f64,
        }
    }

    /// Smallest and largest code over all fields.
    pub fn code_range(&self) -> (i32, i32) {
        let lo = self.fields().iter().map(|f| f.min()).min().unwrap_or(0);
        let hi = self.fields().iter().map(|f| f.max()).max().unwrap_or(0);
        (lo, hi)
    }

    /// Reads unit `j` from a packed row.
    pub fn read_unit(&self, row: &[u8], j: usize) -> u32 {
        match self.storage {
            Storage::Byte => row[j] as u32 & ((1u32 << self.unit_bits) - 1),
            Storage::Stream => {
                let bit = j * self.unit_bits as usize;
                let byte = bit / 8;
                let lo = row[byte] as u32;
                let hi = row.get(byte + 1).copied().unwrap_or(0) as u32;
                ((lo | (hi << 8)) >> (bit % 8)) & ((1u32 << self.unit_bits) - 1)
            }
        }
    }

    /// Writes unit `j` into a packed row (its bits must be zero beforehand).
    pub fn write_unit(&self, row: &mut [u8], j: usize, unit: u32) {
        match self.storage {
            Storage::Byte => row[j] = unit as u8,
            Storage::Stream => {
                let bit = j * self.unit_bits as usize;
                let byte = bit / 8;
                let v = unit << (bit % 8);
                row[byte] |= v as u8;
                if v >> 8 != 0 {
                    row[byte + 1] |= (v >> 8) as u8;
                }
            }
        }
    }

    /// Decodes weight `k` of a packed row.
    pub fn decode(&self, row: &[u8], k: usize) -> i32 {
        let per = self.n_fields as usize;
        let unit = self.read_unit(row, k / per);
        self.fields[k % per].extract(unit)
    }

    /// Packs one row of codes. Returns an error naming the first code out of range.
    pub fn pack_row(&self, codes: &[i32], out: &mut [u8]) -> Result<(), CodeOutOfRange> {
        let per = self.n_fields as usize;
        out.iter_mut().for_each(|b| *b = 0);
        for (j, chunk) in codes.chunks(per).enumerate() {
            let mut unit = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                let f = &self.fields[i];
                if c < f.min() || c > f.max() {
                    return Err(CodeOutOfRange {
                        index: j * per + i,
                        code: c,
                        field: f.type_name(),
                    });
                }
                unit = f.insert(unit, c);
            }
            self.write_unit(out, j, unit);
        }
        Ok(())
    }

    /// Packs a `[rows, k]` matrix of codes (row-major) into a new buffer.
    pub fn pack(&self, codes: &[i32], rows: usize, k: usize) -> Result<Vec<u8>, CodeOutOfRange> {
        let rb = self.row_bytes(k);
        let mut out = vec![0u8; rows * rb];
        for r in 0..rows {
            self.pack_row(&codes[r * k..(r + 1) * k], &mut out[r * rb..(r + 1) * rb])
                .map_err(|mut e| {
                    e.index += r * k;
                    e
                })?;
        }
        Ok(out)
    }

    /// Unpacks a `[rows, k]` buffer into codes.
    pub fn unpack(&self, packed: &[u8], rows: usize, k: usize) -> Vec<i32> {
        let rb = self.row_bytes(k);
        let mut out = Vec::with_capacity(rows * k);
        for r in 0..rows {
            let row = &packed[r * rb..(r + 1) * rb];
            out.extend((0..k).map(|i| self.decode(row, i)));
        }
        out
    }

    /// Canonical short spelling, e.g. `{hi: s4 @ 6..3, lo: s3 @ 2..0} stream`.
    pub fn describe(&self) -> String {
        let body = if self.n_fields == 1 && self.fields[0].shift == 0 {
            self.fields[0].type_name()
        } else {
            let names = ["hi", "lo", "f2", "f3"];
            let parts: Vec<String> = self
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let name = if self.n_fields == 2 {
                        names[i].to_string()
                    } else {
                        format!("f{i}")
                    };
                    format!(
                        "{name}: {} @ {}..{}",
                        f.type_name(),
                        f.shift + f.bits - 1,
                        f.shift
                    )
                })
                .collect();
            format!("{{ {} }}", parts.join(", "))
        };
        format!("{body} {}", self.storage.name())
    }
}

impl fmt::Display for LayoutDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A code that does not fit the field it was packed into.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("code {code} at index {index} does not fit field type {field}")]
pub struct CodeOutOfRange {
    pub index: usize,
    pub code: i32,
    pub field: String,
}

/// Layouts known without a declaration, by name.
pub fn builtin(name: &str) -> Option<LayoutDesc> {
    Some(match name {
        "s2" => LayoutDesc::scalar(true, 2, Storage::Stream),
        "s3" => LayoutDesc::scalar(true, 3, Storage::Stream),
        "s4" => LayoutDesc::scalar(true, 4, Storage::Stream),
        "u4" => LayoutDesc::scalar(false, 4, Storage::Stream),
        "s8" => LayoutDesc::scalar(true, 8, Storage::Stream),
        "q3p5" => Q3P5_STREAM,
        "q3p5b" => Q3P5_BYTE,
        _ => return None,
    })
}

/// Names of the built-in layouts, in a stable order.
pub const BUILTIN_NAMES: [&str; 7] = ["s2", "s3", "s4", "u4", "s8", "q3p5", "q3p5b"];

/// The flagship 3.5-bit layout as a dense 7-bit stream (0.4375 bytes/weight).
pub const Q3P5_STREAM: LayoutDesc = LayoutDesc::pair((true, 4), (true, 3), Storage::Stream);
/// The 3.5-bit layout with one pair per byte (0.5 bytes/weight).
pub const Q3P5_BYTE: LayoutDesc = LayoutDesc::pair((true, 4), (true, 3), Storage::Byte);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q3p5_bits_are_hi_6_3_lo_2_0() {
        let d = Q3P5_STREAM;
        assert_eq!(d.unit_bits, 7);
        assert_eq!((d.fields[0].shift, d.fields[0].bits), (3, 4));
        assert_eq!((d.fields[1].shift, d.fields[1].bits), (0, 3));
        // hi = -8 (1000), lo = 3 (011) -> 1000_011
        assert_eq!(d.fields[0].insert(d.fields[1].insert(0, 3), -8), 0b100_0011);
    }

    #[test]
    fn stream_row_bytes() {
        assert_eq!(Q3P5_STREAM.row_bytes(4096), 4096 * 7 / 16);
        assert_eq!(Q3P5_STREAM.row_bytes(33), (17 * 7usize).div_ceil(8));
        assert_eq!(Q3P5_BYTE.row_bytes(33), 17);
    }
}
