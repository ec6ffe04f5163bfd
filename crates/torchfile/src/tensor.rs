//! Owned tensors as read from a file: dtype, shape and contiguous little-endian bytes.

use std::fmt;

/// Element types this crate reads. Other PyTorch dtypes (complex, float8, uint16, quantized)
/// make the tensor fail with [`crate::Error::UnsupportedDtype`] when it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Short name, as used in the test fixtures and in safetensors-like listings.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor: `data` holds `shape.iter().product()` elements of `dtype`, row-major
/// (C-contiguous), little-endian, whatever the strides and byte order were in the file.
#[derive(Clone, PartialEq)]
pub struct TensorData {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl fmt::Debug for TensorData {
    // The bytes are left out on purpose: a printed checkpoint would otherwise be gigabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorData")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("nbytes", &self.data.len())
            .finish()
    }
}

impl TensorData {
    /// Number of elements (1 for a 0-d tensor).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn elements(&self) -> impl Iterator<Item = &[u8]> {
        self.data.chunks_exact(self.dtype.size())
    }

    /// The values as f32: f16 and bf16 exactly, f64 rounded, integers and bool (0/1) by `as`.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self.dtype {
            DType::F32 => self
                .elements()
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            DType::F16 => self
                .elements()
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            DType::BF16 => self
                .elements()
                .map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            _ => self.to_f64_vec().into_iter().map(|v| v as f32).collect(),
        }
    }

    /// The values as f64 (exact for every dtype except i64 beyond 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let conv: fn(&[u8]) -> f64 = match self.dtype {
            DType::F64 => |b| f64::from_le_bytes(b.try_into().unwrap()),
            DType::F32 => |b| f32::from_le_bytes(b.try_into().unwrap()) as f64,
            DType::F16 => |b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])) as f64,
            DType::BF16 => |b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])) as f64,
            DType::I64 => |b| i64::from_le_bytes(b.try_into().unwrap()) as f64,
            DType::I32 => |b| i32::from_le_bytes(b.try_into().unwrap()) as f64,
            DType::I16 => |b| i16::from_le_bytes([b[0], b[1]]) as f64,
            DType::I8 => |b| b[0] as i8 as f64,
            DType::U8 => |b| b[0] as f64,
            DType::Bool => |b| if b[0] != 0 { 1.0 } else { 0.0 },
        };
        self.elements().map(conv).collect()
    }

    /// The values as i64: integers and bool exactly, floats truncated toward zero.
    pub fn to_i64_vec(&self) -> Vec<i64> {
        match self.dtype {
            DType::I64 => self
                .elements()
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            DType::I32 => self
                .elements()
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
                .collect(),
            DType::I16 => self
                .elements()
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as i64)
                .collect(),
            DType::I8 => self.elements().map(|b| b[0] as i8 as i64).collect(),
            DType::U8 => self.elements().map(|b| b[0] as i64).collect(),
            DType::Bool => self.elements().map(|b| (b[0] != 0) as i64).collect(),
            _ => self.to_f64_vec().into_iter().map(|v| v as i64).collect(),
        }
    }
}

/// IEEE binary16 to binary32, exact (subnormals, infinities and NaN included).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal half: renormalise, since every one is a normal f32.
            let shift = man.leading_zeros() - 21; // bring the top set bit to position 10
            let man = (man << shift) & 0x3ff;
            let exp = 127 - 15 + 1 - shift;
            sign | (exp << 23) | (man << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// bfloat16 is the top half of an f32.
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversions() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0200), 2f32.powi(-15));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x8000).to_bits(), 0x8000_0000);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }
}
