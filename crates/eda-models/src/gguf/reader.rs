//! Parsing GGUF v2/v3 files: header, metadata key/values, tensor infos and the data section.
//!
//! Layout (all little-endian): magic `GGUF`, `u32` version, `u64` tensor count, `u64` key/value
//! count, the key/value pairs (`string` key, `u32` value type, value), the tensor infos (`string`
//! name, `u32` dimension count, `u64` dimensions with the fastest-varying first, `u32` ggml
//! type, `u64` offset into the data section), then padding to `general.alignment` (default 32)
//! and the tensor data. Every read is bounds-checked and every tensor's byte range is validated
//! when the file is opened, so no later access can fail on a truncated or corrupt file.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use eda_core::{EdaError, Result};

use super::quant::GgmlType;

/// The file magic.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Data-section alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Maximum number of tensor dimensions in ggml.
const MAX_DIMS: u32 = 4;
/// Maximum nesting of array values (the format allows arrays of arrays; real files use none).
const MAX_ARRAY_DEPTH: usize = 4;

/// A metadata value of any GGUF type.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer, for any non-negative integer type.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, for any integer type that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v as i64),
            GgufValue::I16(v) => Some(v as i64),
            GgufValue::I32(v) => Some(v as i64),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float, for float and integer types. An f32 becomes the f64 with the same
    /// shortest decimal form (`1e-5f32` → `1e-5`), as the HF config it was converted from had.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.to_string().parse().unwrap_or(v as f64)),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The GGUF type id of this value (`GGUF_TYPE_*`).
    pub fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }
}

/// One tensor's entry in the GGUF tensor-info table.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// llama.cpp tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// ggml dimensions, fastest-varying first (`ne[0]` = row length); the row-major (HF/numpy)
    /// shape is this reversed, see [`GgufTensorInfo::shape`].
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
    /// Byte length of the tensor's data.
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// Row-major shape (`dims` reversed): a ggml `[576, 49152]` embedding is `[49152, 576]`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn get(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An opened GGUF file: metadata, tensor infos, and the (memory-mapped) bytes.
///
/// ```no_run
/// let f = eda_models::gguf::GgufFile::open("model.Q4_1.gguf".as_ref())?;
/// println!("{} tensors, arch {:?}", f.tensors().len(), f.get_str("general.architecture"));
/// # Ok::<(), eda_core::EdaError>(())
/// ```
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_start: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// A bounds-checked little-endian cursor over the header.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> EdaError {
        EdaError::Gguf { path: self.path.to_path_buf(), message: msg.to_string() }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| {
            self.err(format!("truncated: {what} needs {n} bytes at offset {} but the file has {}", self.pos, self.buf.len()))
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.remaining())
            .ok_or_else(|| self.err(format!("truncated: {what} claims {len} bytes at offset {}, beyond the end of the file", self.pos)))?;
        let b = self.take(len, what)?;
        String::from_utf8(b.to_vec()).map_err(|e| self.err(format!("{what} is not valid UTF-8: {e}")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue> {
        let what = format!("value of `{key}`");
        let w = what.as_str();
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(w)?[0]),
            1 => GgufValue::I8(self.array::<1>(w)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(w)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(w)?)),
            4 => GgufValue::U32(self.u32(w)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(w)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(w)?)),
            7 => match self.array::<1>(w)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(format!("{what}: boolean byte {b} is neither 0 nor 1"))),
            },
            8 => GgufValue::String(self.string(w)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!("{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}")));
                }
                let elem = self.u32(w)?;
                let n = self.u64(w)?;
                // Every element takes at least one byte: a count beyond the remaining bytes is
                // corrupt, and checking it first keeps a bogus count from allocating.
                if n > self.remaining() as u64 {
                    return Err(self.err(format!("truncated: {what} claims {n} array elements but only {} bytes remain", self.remaining())));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(elem, key, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64(w)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(w)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(w)?)),
            other => return Err(self.err(format!("{what}: unknown value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Opens and validates `path` (memory-mapped).
    ///
    /// Errors: [`EdaError::Io`] if the file cannot be read, [`EdaError::Gguf`] if it is not a
    /// well-formed GGUF v2/v3 file (bad magic, other version, truncated header, unknown value or
    /// tensor type, duplicate names, misaligned or out-of-file tensor data).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| EdaError::io(path, e))?;
        let len = file.metadata().map_err(|e| EdaError::io(path, e))?.len();
        let bytes = if len == 0 {
            Bytes::Owned(Vec::new())
        } else {
            // SAFETY: the file is treated as read-only; concurrent modification by another
            // process is outside eda's contract (as for the safetensors loader).
            Bytes::Mapped(unsafe { Mmap::map(&file) }.map_err(|e| EdaError::io(path, e))?)
        };
        Self::parse(bytes, path)
    }

    /// Parses a GGUF file held in memory; `origin` names it in error messages.
    pub fn from_bytes(bytes: Vec<u8>, origin: impl Into<PathBuf>) -> Result<Self> {
        let origin = origin.into();
        Self::parse(Bytes::Owned(bytes), &origin)
    }

    fn parse(bytes: Bytes, path: &Path) -> Result<Self> {
        let buf = bytes.get();
        let mut c = Cursor { buf, pos: 0, path };
        let magic = c.array::<4>("magic")?;
        if magic != GGUF_MAGIC {
            return Err(c.err(format!("bad magic {magic:02x?}: not a GGUF file (expected \"GGUF\")")));
        }
        let version = c.u32("version")?;
        if version != 2 && version != 3 {
            let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 { " (a big-endian file)" } else { "" };
            return Err(c.err(format!("unsupported GGUF version {version}{hint}; eda reads versions 2 and 3")));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("key/value count")?;
        // Each key/value takes at least 12 bytes and each tensor info at least 24.
        if n_kv.saturating_mul(12) > c.remaining() as u64 || n_tensors.saturating_mul(24) > c.remaining() as u64 {
            return Err(c.err(format!(
                "truncated: header claims {n_kv} key/values and {n_tensors} tensors but only {} bytes follow",
                c.remaining()
            )));
        }
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut key_index = HashMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("key #{i}"))?;
            let ty = c.u32(&format!("type of `{key}`"))?;
            let value = c.value(ty, &key, 0)?;
            if key_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(c.err(format!("duplicate metadata key `{key}`")));
            }
            metadata.push((key, value));
        }
        let alignment = match key_index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(GgufValue::U32(a)) if *a > 0 && a.is_power_of_two() => *a as u64,
            Some(other) => {
                return Err(c.err(format!("`general.alignment` must be a power-of-two u32, found {other:?}")));
            }
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("name of tensor #{i}"))?;
            let n_dims = c.u32(&format!("dimension count of `{name}`"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.err(format!("tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&format!("dimensions of `{name}`"))?);
            }
            let type_id = c.u32(&format!("type of `{name}`"))?;
            let ggml_type =
                GgmlType::from_id(type_id).ok_or_else(|| c.err(format!("tensor `{name}` has unknown ggml type id {type_id}")))?;
            let offset = c.u64(&format!("offset of `{name}`"))?;
            let n_elements = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| c.err(format!("tensor `{name}`: element count of {dims:?} overflows")))?;
            let (bs, ts) = ggml_type.block_layout();
            if dims[0] % bs as u64 != 0 {
                return Err(c.err(format!(
                    "tensor `{name}` ({}): row length {} is not a multiple of the block size {bs}",
                    ggml_type.name(),
                    dims[0]
                )));
            }
            let n_bytes =
                (n_elements / bs as u64).checked_mul(ts as u64).ok_or_else(|| c.err(format!("tensor `{name}`: byte size overflows")))?;
            if offset % alignment != 0 {
                return Err(c.err(format!("tensor `{name}`: data offset {offset} is not a multiple of the alignment {alignment}")));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(c.err(format!("duplicate tensor `{name}`")));
            }
            tensors.push(GgufTensorInfo { name, dims, ggml_type, offset, n_bytes });
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = buf.len() as u64;
        for t in &tensors {
            let end = data_start.checked_add(t.offset).and_then(|s| s.checked_add(t.n_bytes));
            if end.is_none_or(|e| e > file_len) {
                return Err(c.err(format!(
                    "data of tensor `{}` ({} bytes at data offset {}) lies outside the file ({file_len} bytes, data section at {data_start})",
                    t.name, t.n_bytes, t.offset
                )));
            }
        }
        Ok(GgufFile { path: path.to_path_buf(), bytes, version, metadata, key_index, tensors, tensor_index, alignment, data_start })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section in the file.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// The metadata value for `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The string value of `key` (`None` if absent or not a string).
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(GgufValue::as_str)
    }

    /// Every tensor info, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The tensor info called `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.get()
    }

    /// The raw bytes of a tensor (validated when the file was opened).
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> &[u8] {
        let start = (self.data_start + info.offset) as usize;
        &self.bytes.get()[start..start + info.n_bytes as usize]
    }

    /// Tensor `name` dequantised to f32, with its row-major shape.
    ///
    /// Errors: [`EdaError::MissingTensor`], or [`EdaError::Gguf`] naming the tensor and its type
    /// when the type cannot be dequantised.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self.tensor(name).ok_or_else(|| EdaError::MissingTensor { name: name.into(), file: self.path.clone() })?;
        let data =
            super::quant::dequantize(info.ggml_type, self.tensor_bytes(info)).map_err(|m| self.error(format!("tensor `{name}`: {m}")))?;
        Ok((info.shape(), data))
    }

    /// An [`EdaError::Gguf`] about this file.
    pub fn error(&self, message: impl Into<String>) -> EdaError {
        EdaError::Gguf { path: self.path.clone(), message: message.into() }
    }

    /// A required metadata value as an unsigned integer.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        match self.get(key) {
            None => Err(self.error(format!("missing metadata key `{key}`"))),
            Some(v) => v.as_u64().ok_or_else(|| self.error(format!("metadata `{key}` must be a non-negative integer, found {v:?}"))),
        }
    }

    /// An optional metadata value as an unsigned integer (present with another type is an error).
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(|_| self.require_u64(key)).transpose()
    }

    /// An optional metadata value as a float.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.error(format!("metadata `{key}` must be a number, found {v:?}"))),
        }
    }

    /// An optional metadata value as a boolean.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.error(format!("metadata `{key}` must be a boolean, found {v:?}"))),
        }
    }

    /// An optional array of strings.
    pub fn opt_str_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        match self.get(key) {
            None => Ok(None),
            Some(GgufValue::Array(a)) => a
                .iter()
                .map(|v| v.as_str().ok_or_else(|| self.error(format!("metadata `{key}` must be an array of strings"))))
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(self.error(format!("metadata `{key}` must be an array of strings"))),
        }
    }
}
