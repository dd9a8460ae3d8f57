//! A minimal GGUF v3 writer (metadata + pre-encoded tensors), used by the tests and by anyone
//! who needs a small GGUF file; it is the inverse of [`GgufFile`](super::GgufFile).

use std::path::Path;

use eda_core::{EdaError, Result};

use super::quant::GgmlType;
use super::reader::{GgufValue, DEFAULT_ALIGNMENT, GGUF_MAGIC};

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// Builds a GGUF file in memory.
///
/// ```
/// use eda_models::gguf::{quant::{encode_f32, GgmlType}, GgufFile, GgufValue, GgufWriter};
/// let mut w = GgufWriter::new();
/// w.add_metadata("general.architecture", GgufValue::String("llama".into()));
/// // A row-major [2, 3] matrix: ggml dims are reversed.
/// w.add_tensor("t", &[2, 3], GgmlType::F32, encode_f32(&[1., 2., 3., 4., 5., 6.])).unwrap();
/// let f = GgufFile::from_bytes(w.to_bytes(), "mem").unwrap();
/// assert_eq!(f.tensor("t").unwrap().dims, vec![3, 2]);
/// assert_eq!(f.tensor_f32("t").unwrap(), (vec![2, 3], vec![1., 2., 3., 4., 5., 6.]));
/// ```
pub struct GgufWriter {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(*x as u8),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(a) => {
            // An empty array is written with element type u8 (any type reads back the same).
            let elem = a.first().map(GgufValue::type_id).unwrap_or(0);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                put_value(out, x);
            }
        }
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

impl GgufWriter {
    /// An empty version-3 file with the default alignment.
    pub fn new() -> Self {
        GgufWriter { version: 3, alignment: DEFAULT_ALIGNMENT, metadata: Vec::new(), tensors: Vec::new() }
    }

    /// Writes `version` into the header instead of 3 (for tests of version handling).
    pub fn set_version(&mut self, version: u32) {
        self.version = version;
    }

    /// Uses `alignment` for the data section and records it as `general.alignment`.
    pub fn set_alignment(&mut self, alignment: u32) {
        self.alignment = alignment as u64;
        self.metadata.retain(|(k, _)| k != "general.alignment");
        self.metadata.push(("general.alignment".into(), GgufValue::U32(alignment)));
    }

    /// Adds (or replaces) a metadata key.
    pub fn add_metadata(&mut self, key: &str, value: GgufValue) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Adds a tensor with row-major `shape` (written reversed, as ggml expects) and `data`
    /// already encoded as `ty` (see the encoders and quantisers in [`quant`](super::quant)).
    ///
    /// Errors with [`EdaError::InvalidArgument`] when `data` does not hold exactly the blocks
    /// that `shape` needs.
    pub fn add_tensor(&mut self, name: &str, shape: &[usize], ty: GgmlType, data: Vec<u8>) -> Result<()> {
        let n: usize = shape.iter().product();
        let (bs, ts) = ty.block_layout();
        let row = shape.last().copied().unwrap_or(1);
        if shape.is_empty() || row % bs != 0 || n / bs * ts != data.len() {
            return Err(EdaError::InvalidArgument(format!(
                "tensor `{name}`: {} bytes do not encode shape {shape:?} as {}",
                data.len(),
                ty.name()
            )));
        }
        self.tensors.push(PendingTensor { name: name.into(), dims: shape.iter().rev().map(|&d| d as u64).collect(), ty, data });
        Ok(())
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut out, v);
        }
        let align = |x: u64| x.div_ceil(self.alignment) * self.alignment;
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = align(offset + t.data.len() as u64);
        }
        out.resize(align(out.len() as u64) as usize, 0);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            out.resize(align(out.len() as u64) as usize, 0);
        }
        out
    }

    /// Atomically writes the file to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        eda_core::io::atomic_write(path, &self.to_bytes())
    }
}
