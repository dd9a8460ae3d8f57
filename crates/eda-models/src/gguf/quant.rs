//! ggml tensor types: block layout, dequantisation to f32 and a few reference quantisers.
//!
//! Every block format follows ggml's reference C code (`ggml-quants.c`); results are bit-identical
//! to the numpy implementation in llama.cpp's `gguf` Python package (checked by
//! `tests/gguf.rs` against a fixture it wrote). Arithmetic is done in f32 in the same order as
//! the reference so that the rounding agrees too.

use half::f16;
use rayon::prelude::*;

/// A ggml tensor type as stored in a GGUF tensor info (`ggml_type`).
///
/// All types of the format are known (so that a file's layout can be checked and errors can name
/// the type); [`GgmlType::can_dequantize`] tells which ones eda converts to f32.
#[allow(non_camel_case_types, missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// Elements per super-block of the k-quants.
const QK_K: usize = 256;

impl GgmlType {
    /// The type with ggml id `id`, or `None` for ids that are unassigned or were retired from
    /// the format (4, 5, 31–33, 36–38).
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            _ => return None,
        })
    }

    /// The ggml id of this type.
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            IQ2_XXS => 16,
            IQ2_XS => 17,
            IQ3_XXS => 18,
            IQ1_S => 19,
            IQ4_NL => 20,
            IQ3_S => 21,
            IQ2_S => 22,
            IQ4_XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            IQ1_M => 29,
            BF16 => 30,
            TQ1_0 => 34,
            TQ2_0 => 35,
            MXFP4 => 39,
        }
    }

    /// The type's name as llama.cpp spells it (`Q4_K`, `BF16`, ...).
    pub fn name(self) -> String {
        format!("{self:?}")
    }

    /// `(elements per block, bytes per block)` (ggml `GGML_QUANT_SIZES`).
    pub fn block_layout(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 => (1, 4),
            F16 | BF16 => (1, 2),
            Q4_0 => (32, 2 + 16),
            Q4_1 => (32, 2 + 2 + 16),
            Q5_0 => (32, 2 + 4 + 16),
            Q5_1 => (32, 2 + 2 + 4 + 16),
            Q8_0 => (32, 2 + 32),
            Q8_1 => (32, 4 + 4 + 32),
            Q2_K => (QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
            Q3_K => (QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
            Q4_K => (QK_K, 2 + 2 + QK_K / 2 + 12),
            Q5_K => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12),
            Q6_K => (QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16),
            Q8_K => (QK_K, 4 + QK_K + QK_K / 8),
            IQ2_XXS => (QK_K, 2 + QK_K / 4),
            IQ2_XS => (QK_K, 2 + QK_K / 4 + QK_K / 32),
            IQ3_XXS => (QK_K, 2 + QK_K / 4 + QK_K / 8),
            IQ1_S => (QK_K, 2 + QK_K / 8 + QK_K / 16),
            IQ4_NL => (32, 2 + 16),
            IQ3_S => (QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
            IQ2_S => (QK_K, 2 + QK_K / 4 + QK_K / 16),
            IQ4_XS => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
            I8 => (1, 1),
            I16 => (1, 2),
            I32 => (1, 4),
            I64 | F64 => (1, 8),
            IQ1_M => (QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
            TQ1_0 => (QK_K, 2 + 4 * 13),
            TQ2_0 => (QK_K, 2 + 64),
            MXFP4 => (32, 1 + 16),
        }
    }

    /// Whether [`dequantize`] supports this type.
    pub fn can_dequantize(self) -> bool {
        block_fn(self).is_some()
    }

    /// The types [`dequantize`] supports, for error messages.
    pub fn supported_names() -> &'static str {
        "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K"
    }
}

/// Dequantises one block: `src` holds exactly one block's bytes, `dst` its elements.
type BlockFn = fn(&[u8], &mut [f32]);

fn block_fn(ty: GgmlType) -> Option<BlockFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => |s, d| d[0] = f32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        F16 => |s, d| d[0] = f16_at(s, 0),
        BF16 => |s, d| d[0] = half::bf16::from_le_bytes([s[0], s[1]]).to_f32(),
        Q8_0 => deq_q8_0,
        Q4_0 => deq_q4_0,
        Q4_1 => deq_q4_1,
        Q5_0 => deq_q5_0,
        Q5_1 => deq_q5_1,
        Q4_K => deq_q4_k,
        Q5_K => deq_q5_k,
        Q6_K => deq_q6_k,
        _ => return None,
    })
}

fn f16_at(s: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([s[i], s[i + 1]]).to_f32()
}

fn deq_q8_0(s: &[u8], out: &mut [f32]) {
    let d = f16_at(s, 0);
    for (o, &q) in out.iter_mut().zip(&s[2..34]) {
        *o = (q as i8) as f32 * d;
    }
}

/// Low nibbles hold elements 0..16 of a 32-block, high nibbles 16..32.
fn nibble(qs: &[u8], j: usize) -> u8 {
    if j < 16 {
        qs[j] & 0x0F
    } else {
        qs[j - 16] >> 4
    }
}

fn deq_q4_0(s: &[u8], out: &mut [f32]) {
    let d = f16_at(s, 0);
    let qs = &s[2..18];
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * (nibble(qs, j) as i32 - 8) as f32;
    }
}

fn deq_q4_1(s: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(s, 0), f16_at(s, 2));
    let qs = &s[4..20];
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * nibble(qs, j) as f32 + m;
    }
}

/// Bit `j` of the little-endian u32 `qh` is the fifth bit of element `j`.
fn fifth_bit(qh: &[u8], j: usize) -> u8 {
    (u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]) >> j) as u8 & 1
}

fn deq_q5_0(s: &[u8], out: &mut [f32]) {
    let d = f16_at(s, 0);
    let (qh, qs) = (&s[2..6], &s[6..22]);
    for (j, o) in out.iter_mut().enumerate() {
        let q = nibble(qs, j) | (fifth_bit(qh, j) << 4);
        *o = d * (q as i32 - 16) as f32;
    }
}

fn deq_q5_1(s: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(s, 0), f16_at(s, 2));
    let (qh, qs) = (&s[4..8], &s[8..24]);
    for (j, o) in out.iter_mut().enumerate() {
        let q = nibble(qs, j) | (fifth_bit(qh, j) << 4);
        *o = d * q as f32 + m;
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K super-block.
fn k_scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        ((scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4), (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4))
    }
}

fn deq_q4_k(s: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(s, 0), f16_at(s, 2));
    let (scales, qs) = (&s[4..16], &s[16..144]);
    for sub in 0..8 {
        let (sc, m) = k_scale_min(scales, sub);
        let (dl, ml) = (d * sc as f32, dmin * m as f32);
        // Sub-blocks 2c and 2c+1 share the 32 bytes of chunk c (low / high nibbles).
        let chunk = &qs[(sub / 2) * 32..(sub / 2) * 32 + 32];
        let shift = 4 * (sub % 2);
        for (l, o) in out[sub * 32..sub * 32 + 32].iter_mut().enumerate() {
            *o = dl * ((chunk[l] >> shift) & 0x0F) as f32 - ml;
        }
    }
}

fn deq_q5_k(s: &[u8], out: &mut [f32]) {
    let (d, dmin) = (f16_at(s, 0), f16_at(s, 2));
    let (scales, qh, qs) = (&s[4..16], &s[16..48], &s[48..176]);
    for sub in 0..8 {
        let (sc, m) = k_scale_min(scales, sub);
        let (dl, ml) = (d * sc as f32, dmin * m as f32);
        let chunk = &qs[(sub / 2) * 32..(sub / 2) * 32 + 32];
        let shift = 4 * (sub % 2);
        for (l, o) in out[sub * 32..sub * 32 + 32].iter_mut().enumerate() {
            let q = ((chunk[l] >> shift) & 0x0F) | (((qh[l] >> sub) & 1) << 4);
            *o = dl * q as f32 - ml;
        }
    }
}

fn deq_q6_k(s: &[u8], out: &mut [f32]) {
    let (ql, qh, scales) = (&s[0..128], &s[128..192], &s[192..208]);
    let d = f16_at(s, 208);
    for (p, o) in out.iter_mut().enumerate() {
        // Two halves of 128 elements; within a half, ql nibble plane `r / 64` and qh bit pair `r / 32`.
        let (h, r) = (p / 128, p % 128);
        let lo = (ql[h * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
        let hi = (qh[h * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
        let q = (lo | (hi << 4)) as i32 - 32;
        *o = (d * (scales[p / 16] as i8) as f32) * q as f32;
    }
}

/// Blocks dequantised per rayon task.
const BLOCKS_PER_TASK: usize = 1024;

/// Dequantises `data` (whole blocks of type `ty`) to f32, in parallel.
///
/// Errors (as a message for the caller to wrap with the file and tensor name) when the type is
/// not supported or `data` is not a whole number of blocks.
///
/// ```
/// use eda_models::gguf::quant::{dequantize, quantize_q8_0, GgmlType};
/// let x: Vec<f32> = (0..64).map(|i| i as f32 / 10.0 - 3.0).collect();
/// let y = dequantize(GgmlType::Q8_0, &quantize_q8_0(&x)).unwrap();
/// assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 0.02));
/// ```
pub fn dequantize(ty: GgmlType, data: &[u8]) -> std::result::Result<Vec<f32>, String> {
    let f = block_fn(ty)
        .ok_or_else(|| format!("tensor type {} cannot be dequantised (supported: {})", ty.name(), GgmlType::supported_names()))?;
    let (bs, ts) = ty.block_layout();
    if data.len() % ts != 0 {
        return Err(format!("{} bytes is not a whole number of {} blocks of {ts} bytes", data.len(), ty.name()));
    }
    let mut out = vec![0f32; data.len() / ts * bs];
    out.par_chunks_mut(BLOCKS_PER_TASK * bs).zip(data.par_chunks(BLOCKS_PER_TASK * ts)).for_each(|(o, b)| {
        for (ob, bb) in o.chunks_exact_mut(bs).zip(b.chunks_exact(ts)) {
            f(bb, ob);
        }
    });
    Ok(out)
}

fn check_blocks(x: &[f32], what: &str) {
    // Only reachable through a caller bug (the writer checks shapes first).
    assert!(x.len() % 32 == 0, "{what}: {} values is not a multiple of the block size 32", x.len());
}

/// Quantises `x` (a multiple of 32 values) to Q8_0 like ggml's reference
/// `quantize_row_q8_0_ref`: per block `d = max|x| / 127`, `q = round(x / d)`.
///
/// # Panics
/// If `x.len()` is not a multiple of 32.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    check_blocks(x, "Q8_0");
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|v| ((v * id).round() as i8) as u8));
    }
    out
}

/// Packs 32 4-bit values: element `j < 16` in the low nibble of byte `j`, `j ≥ 16` in the high
/// nibble of byte `j - 16`.
fn pack_nibbles(q: &[u8; 32], out: &mut Vec<u8>) {
    out.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
}

/// Quantises `x` (a multiple of 32 values) to Q4_0 like ggml's reference: `d = m / -8` where `m`
/// is the value of largest magnitude, `q = min(15, trunc(x / d + 8.5))`.
///
/// # Panics
/// If `x.len()` is not a multiple of 32.
pub fn quantize_q4_0(x: &[f32]) -> Vec<u8> {
    check_blocks(x, "Q4_0");
    let mut out = Vec::with_capacity(x.len() / 32 * 18);
    for b in x.chunks_exact(32) {
        // The first value of largest magnitude, with its sign.
        let max = b.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = max / -8.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut q = [0u8; 32];
        for (qj, v) in q.iter_mut().zip(b) {
            *qj = ((v * id + 8.5).trunc() as u8).min(15);
        }
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        pack_nibbles(&q, &mut out);
    }
    out
}

/// Quantises `x` (a multiple of 32 values) to Q4_1 like ggml's reference: `d = (max - min) / 15`,
/// `q = min(15, trunc((x - min) / d + 0.5))`, stored with `min`.
///
/// # Panics
/// If `x.len()` is not a multiple of 32.
pub fn quantize_q4_1(x: &[f32]) -> Vec<u8> {
    check_blocks(x, "Q4_1");
    let mut out = Vec::with_capacity(x.len() / 32 * 20);
    for b in x.chunks_exact(32) {
        let min = b.iter().copied().fold(f32::INFINITY, f32::min);
        let max = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut q = [0u8; 32];
        for (qj, v) in q.iter_mut().zip(b) {
            *qj = (((v - min) * id + 0.5).trunc() as u8).min(15);
        }
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
        pack_nibbles(&q, &mut out);
    }
    out
}

/// Encodes f32 values as F16 (round to nearest even).
pub fn encode_f16(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect()
}

/// Encodes f32 values as BF16 (round to nearest even).
pub fn encode_bf16(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect()
}

/// Encodes f32 values as little-endian F32.
pub fn encode_f32(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_layouts() {
        for id in 0..64 {
            if let Some(t) = GgmlType::from_id(id) {
                assert_eq!(t.id(), id);
                let (bs, ts) = t.block_layout();
                assert!(bs > 0 && ts > 0);
            }
        }
        assert_eq!(GgmlType::Q6_K.block_layout(), (256, 210));
        assert_eq!(GgmlType::Q4_K.block_layout(), (256, 144));
        assert_eq!(GgmlType::Q5_K.block_layout(), (256, 176));
        assert!(GgmlType::from_id(4).is_none());
    }

    #[test]
    fn quantisers_round_trip_within_error() {
        let x: Vec<f32> = (0..256).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        for (ty, q) in [(GgmlType::Q8_0, quantize_q8_0(&x)), (GgmlType::Q4_0, quantize_q4_0(&x)), (GgmlType::Q4_1, quantize_q4_1(&x))] {
            let y = dequantize(ty, &q).unwrap();
            for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                let range = xb.iter().fold(0f32, |m, v| m.max(v.abs())) * 2.0;
                let tol = if ty == GgmlType::Q8_0 { range / 254.0 } else { range / 15.0 } * 1.01;
                for (a, c) in xb.iter().zip(yb) {
                    assert!((a - c).abs() <= tol, "{ty:?} block {b}: {a} vs {c} (tol {tol})");
                }
            }
        }
        assert!(dequantize(GgmlType::IQ2_XXS, &[0; 66]).unwrap_err().contains("IQ2_XXS"));
        assert!(dequantize(GgmlType::Q8_0, &[0; 33]).is_err());
    }
}
