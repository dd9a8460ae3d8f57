//! The one place where eda reads and writes [safetensors](https://github.com/huggingface/safetensors)
//! files: target and draft checkpoints, feature shards, selection statistics, training
//! checkpoints.
//!
//! * Writing ([`serialize`], [`write()`]) is **reproducible**: the `__metadata__` entries are
//!   written in key order and the tensors in the order upstream safetensors uses (descending
//!   dtype alignment, then name), so equal content gives equal bytes whatever order the tensors
//!   and metadata were collected in. [`write()`] streams through [`io::atomic_write_with`] (temp
//!   file, fsync, rename).
//! * Reading ([`SafetensorsFile`]) parses and validates the header once, over a memory map
//!   ([`SafetensorsFile::open`]) or borrowed bytes ([`SafetensorsFile::parse`]); errors name the
//!   file and the tensor.
//! * Decoding ([`decode`], [`decode_into`]) turns stored bytes into host values: F32, F16 and BF16
//!   into `f32`, F64 into `f64`, I64 and I32 into `i64`, and U8, U32, U64 as themselves.
//!
//! ```
//! use std::collections::BTreeMap;
//! use eda_core::safetensors::{self as st, Dtype, HostTensor, SafetensorsFile};
//!
//! let tensors = [HostTensor::from_values("w", vec![2], &[1.5f32, -2.0]), HostTensor::from_values("ids", vec![1], &[7u32])];
//! let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
//! let bytes = st::serialize(&tensors, &meta, "<memory>".as_ref()).unwrap();
//! let file = SafetensorsFile::parse(bytes.as_slice(), "<memory>".as_ref()).unwrap();
//! assert_eq!(file.read::<f32>("w", &[2]).unwrap(), vec![1.5, -2.0]);
//! assert_eq!(file.tensor("ids").unwrap().dtype, Dtype::U32);
//! assert_eq!(file.metadata()["format"], "pt");
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::Serialize;

use crate::{io, EdaError, Result};

pub use ::safetensors::Dtype;

/// The safetensors header key that holds free-form string metadata.
const METADATA_KEY: &str = "__metadata__";

mod sealed {
    pub trait Sealed {}
}

/// A host element type that safetensors bytes decode into (and encode from).
///
/// Implemented for `f32` (stored as F32, F16 or BF16), `f64` (F64), `i64` (I64 or I32), `u8`
/// (U8), `u32` (U32) and `u64` (U64). Sealed: the byte layouts live in this module only.
pub trait Element: Copy + Default + sealed::Sealed {
    /// The dtype values of this type are written as.
    const DTYPE: Dtype;
    /// Stored dtypes that decode into this type, for error messages.
    const ACCEPTS: &'static str;
    /// Whether values stored as `dtype` decode into this type.
    fn accepts(dtype: Dtype) -> bool;
    /// Decodes one element of `dtype` from its little-endian bytes (`bytes.len()` is the width).
    #[doc(hidden)]
    fn from_le(dtype: Dtype, bytes: &[u8]) -> Self;
    /// Appends the little-endian bytes of `self` as [`DTYPE`](Self::DTYPE).
    #[doc(hidden)]
    fn put_le(self, out: &mut Vec<u8>);
}

macro_rules! exact_element {
    ($t:ty, $dtype:ident) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: Dtype = Dtype::$dtype;
            const ACCEPTS: &'static str = stringify!($dtype);
            fn accepts(dtype: Dtype) -> bool {
                dtype == Dtype::$dtype
            }
            fn from_le(_: Dtype, b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("element width checked by the caller"))
            }
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}

exact_element!(f64, F64);
exact_element!(u8, U8);
exact_element!(u32, U32);
exact_element!(u64, U64);

impl sealed::Sealed for f32 {}
impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
    const ACCEPTS: &'static str = "F32, F16 or BF16";
    fn accepts(dtype: Dtype) -> bool {
        matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
    }
    fn from_le(dtype: Dtype, b: &[u8]) -> Self {
        match dtype {
            Dtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            Dtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            _ => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl sealed::Sealed for i64 {}
impl Element for i64 {
    const DTYPE: Dtype = Dtype::I64;
    const ACCEPTS: &'static str = "I64 or I32";
    fn accepts(dtype: Dtype) -> bool {
        matches!(dtype, Dtype::I64 | Dtype::I32)
    }
    fn from_le(dtype: Dtype, b: &[u8]) -> Self {
        match dtype {
            Dtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            _ => i64::from_le_bytes(b.try_into().expect("element width checked by the caller")),
        }
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

/// Width in bytes of one element of `dtype` (`None` for sub-byte dtypes such as F4).
fn width(dtype: Dtype) -> Option<usize> {
    let bits = dtype.bitsize();
    bits.is_multiple_of(8).then_some(bits / 8)
}

/// Decodes `bytes` stored as `dtype` into `out` (one element per slot); `name` names the tensor
/// in errors.
///
/// Errors: [`EdaError::UnsupportedDType`] when `dtype` does not decode into `T`,
/// [`EdaError::Mismatch`] when `bytes` does not hold exactly `out.len()` elements.
pub fn decode_into<T: Element>(name: &str, dtype: Dtype, bytes: &[u8], out: &mut [T]) -> Result<()> {
    let w = match width(dtype) {
        Some(w) if T::accepts(dtype) => w,
        _ => return Err(EdaError::UnsupportedDType { name: name.into(), dtype: format!("{dtype:?} (expected {})", T::ACCEPTS) }),
    };
    if bytes.len() != out.len() * w {
        return Err(EdaError::mismatch(
            format!("bytes of tensor `{name}` ({} elements of {dtype:?})", out.len()),
            out.len() * w,
            bytes.len(),
        ));
    }
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(w)) {
        *o = T::from_le(dtype, c);
    }
    Ok(())
}

/// Decodes all of `bytes` stored as `dtype` (see [`decode_into`]).
///
/// ```
/// use eda_core::safetensors::{decode, Dtype};
/// let bf16 = half::bf16::from_f32(0.5).to_le_bytes();
/// assert_eq!(decode::<f32>("x", Dtype::BF16, &bf16).unwrap(), vec![0.5]);
/// assert!(decode::<f32>("x", Dtype::I64, &[0; 8]).is_err());
/// ```
pub fn decode<T: Element>(name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<T>> {
    let n = width(dtype).filter(|_| T::accepts(dtype)).map_or(0, |w| bytes.len() / w);
    let mut out = vec![T::default(); n];
    decode_into(name, dtype, bytes, &mut out)?;
    Ok(out)
}

/// The little-endian bytes of `values`, stored as `T::DTYPE`.
pub fn encode<T: Element>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * width(T::DTYPE).unwrap_or(1));
    values.iter().for_each(|v| v.put_le(&mut out));
    out
}

/// The bytes of `values` stored as `dtype`: F32 (exact), F16 or BF16 (rounded to nearest).
///
/// Errors with [`EdaError::InvalidArgument`] for any other dtype.
pub fn encode_f32(values: &[f32], dtype: Dtype) -> Result<Vec<u8>> {
    Ok(match dtype {
        Dtype::F32 => encode(values),
        Dtype::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        Dtype::BF16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        other => return Err(EdaError::InvalidArgument(format!("cannot store f32 values as {other:?} (expected F32, F16 or BF16)"))),
    })
}

/// A named tensor on the host, ready to be written: dtype, row-major shape and little-endian
/// bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Tensor name (key in the safetensors header).
    pub name: String,
    /// Storage dtype.
    pub dtype: Dtype,
    /// Shape (row-major).
    pub shape: Vec<usize>,
    /// Little-endian bytes; must hold exactly the elements of `shape`.
    pub data: Vec<u8>,
}

impl HostTensor {
    /// A tensor from raw bytes (checked against `shape` and `dtype` when written).
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: Vec<usize>, data: Vec<u8>) -> Self {
        HostTensor { name: name.into(), dtype, shape, data }
    }

    /// A tensor holding `values`, stored as `T::DTYPE`.
    pub fn from_values<T: Element>(name: impl Into<String>, shape: Vec<usize>, values: &[T]) -> Self {
        HostTensor::new(name, T::DTYPE, shape, encode(values))
    }

    /// A tensor holding `values` stored as `dtype` (F32, F16 or BF16; see [`encode_f32`]).
    pub fn from_f32_as(name: impl Into<String>, shape: Vec<usize>, values: &[f32], dtype: Dtype) -> Result<Self> {
        Ok(HostTensor::new(name, dtype, shape, encode_f32(values, dtype)?))
    }
}

/// One tensor entry of the header, in upstream's field order.
#[derive(Serialize)]
struct HeaderEntry<'a> {
    dtype: Dtype,
    shape: &'a [usize],
    data_offsets: [usize; 2],
}

/// The header (length prefix included) and the order in which the tensors' bytes follow it.
fn layout<'t>(tensors: &'t [HostTensor], metadata: &BTreeMap<String, String>, path: &Path) -> Result<(Vec<u8>, Vec<&'t HostTensor>)> {
    let err = |message: String| EdaError::Safetensors { path: path.into(), message };
    let json = |v: serde_json::Result<String>| v.map_err(|e| err(e.to_string()));
    let mut order: Vec<&HostTensor> = tensors.iter().collect();
    // Upstream's order (descending alignment, then name): every tensor stays aligned in the file.
    order.sort_by(|a, b| (Reverse(a.dtype), &a.name).cmp(&(Reverse(b.dtype), &b.name)));
    let mut seen = HashSet::with_capacity(order.len());
    let mut header = String::from("{");
    if !metadata.is_empty() {
        header.push_str(&json(serde_json::to_string(METADATA_KEY))?);
        header.push(':');
        header.push_str(&json(serde_json::to_string(metadata))?);
    }
    let mut offset = 0usize;
    for t in &order {
        if t.name == METADATA_KEY || !seen.insert(t.name.as_str()) {
            return Err(err(format!("tensor name `{}` is reserved or used twice", t.name)));
        }
        let bits = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).and_then(|n| n.checked_mul(t.dtype.bitsize()));
        let expected = bits.filter(|b| b.is_multiple_of(8)).map(|b| b / 8);
        if expected != Some(t.data.len()) {
            return Err(err(format!(
                "tensor `{}`: {} bytes do not hold shape {:?} of {:?} ({} bytes)",
                t.name,
                t.data.len(),
                t.shape,
                t.dtype,
                expected.map_or("a non-whole number of".into(), |b| b.to_string())
            )));
        }
        if header.len() > 1 {
            header.push(',');
        }
        header.push_str(&json(serde_json::to_string(&t.name))?);
        header.push(':');
        let entry = HeaderEntry { dtype: t.dtype, shape: &t.shape, data_offsets: [offset, offset + t.data.len()] };
        header.push_str(&json(serde_json::to_string(&entry))?);
        offset += t.data.len();
    }
    header.push('}');
    // Upstream pads the header with spaces to a multiple of 8 bytes so the data stays aligned.
    let padded = header.len().next_multiple_of(8);
    let mut out = Vec::with_capacity(8 + padded);
    out.extend_from_slice(&(padded as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.resize(8 + padded, b' ');
    Ok((out, order))
}

/// Serialises `tensors` and `metadata` to safetensors bytes. The result depends only on the set
/// of tensors and metadata entries, not on their order. `path` names the destination in errors.
///
/// Errors with [`EdaError::Safetensors`] when a tensor's bytes do not match its shape and dtype
/// or a name is used twice.
pub fn serialize(tensors: &[HostTensor], metadata: &BTreeMap<String, String>, path: &Path) -> Result<Vec<u8>> {
    let (mut out, order) = layout(tensors, metadata, path)?;
    out.reserve(order.iter().map(|t| t.data.len()).sum());
    order.iter().for_each(|t| out.extend_from_slice(&t.data));
    Ok(out)
}

/// Atomically writes `tensors` and `metadata` to `path` as safetensors (same bytes as
/// [`serialize`]), streaming the tensor data instead of building the file in memory.
pub fn write(path: &Path, tensors: &[HostTensor], metadata: &BTreeMap<String, String>) -> Result<()> {
    let (header, order) = layout(tensors, metadata, path)?;
    io::atomic_write_with(path, |w| {
        w.write_all(&header)?;
        order.iter().try_for_each(|t| w.write_all(&t.data))
    })
}

/// A borrowed tensor of a [`SafetensorsFile`]: its dtype, shape and stored bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Stored dtype.
    pub dtype: Dtype,
    /// Shape (row-major).
    pub shape: &'a [usize],
    /// Little-endian bytes.
    pub data: &'a [u8],
}

impl TensorRef<'_> {
    /// The values, decoded into `T` (see [`decode`]).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        decode(self.name, self.dtype, self.data)
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed safetensors file: the header is read and validated once, tensors are borrowed from
/// the storage `B` (a memory map for [`open`](SafetensorsFile::open), any byte buffer for
/// [`parse`](SafetensorsFile::parse)).
pub struct SafetensorsFile<B = Mmap> {
    path: PathBuf,
    bytes: B,
    data_start: usize,
    header: ::safetensors::tensor::Metadata,
    names: Vec<String>,
    metadata: BTreeMap<String, String>,
}

impl SafetensorsFile<Mmap> {
    /// Memory-maps and parses the file at `path`.
    ///
    /// Errors: [`EdaError::Io`] when it cannot be opened, [`EdaError::Safetensors`] when it is
    /// truncated or corrupt.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| EdaError::io(path, e))?;
        // SAFETY: the file is treated as read-only; its concurrent truncation by another process
        // is outside eda's contract (as for every mmap-based loader).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| EdaError::io(path, e))?;
        SafetensorsFile::parse(mmap, path)
    }
}

impl<B: AsRef<[u8]>> SafetensorsFile<B> {
    /// Parses safetensors `bytes`; `path` names the source in errors.
    ///
    /// Errors with [`EdaError::Safetensors`] when the header is malformed or does not describe
    /// the bytes exactly (truncated data, overlapping or out-of-range offsets).
    pub fn parse(bytes: B, path: &Path) -> Result<Self> {
        let (n, header) = ::safetensors::SafeTensors::read_metadata(bytes.as_ref())
            .map_err(|e| EdaError::Safetensors { path: path.into(), message: e.to_string() })?;
        let metadata = header.metadata().iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut names = header.offset_keys();
        names.sort_unstable();
        Ok(SafetensorsFile { path: path.into(), bytes, data_start: 8 + n, header, names, metadata })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every byte of the file.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }

    /// The `__metadata__` entries (empty when the file has none).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether the file holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.header.info(name).is_some()
    }

    /// Tensor `name`; [`EdaError::MissingTensor`] naming this file when it is absent.
    pub fn tensor<'a>(&'a self, name: &'a str) -> Result<TensorRef<'a>> {
        let info = self.header.info(name).ok_or_else(|| EdaError::MissingTensor { name: name.into(), file: self.path.clone() })?;
        let (a, b) = info.data_offsets;
        // The header was validated against the buffer length, so this only fails on a bug.
        let data = self
            .bytes
            .as_ref()
            .get(self.data_start + a..self.data_start + b)
            .ok_or_else(|| EdaError::Safetensors { path: self.path.clone(), message: format!("data of `{name}` lies outside the file") })?;
        Ok(TensorRef { name, dtype: info.dtype, shape: &info.shape, data })
    }

    /// Tensor `name` decoded into `T`, after checking that its shape is `expected`
    /// ([`EdaError::ShapeMismatch`] naming the tensor).
    pub fn read<T: Element>(&self, name: &str, expected: &[usize]) -> Result<Vec<T>> {
        let t = self.tensor(name)?;
        if t.shape != expected {
            return Err(EdaError::ShapeMismatch { name: name.into(), expected: expected.to_vec(), actual: t.shape.to_vec() });
        }
        t.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sample() -> Vec<HostTensor> {
        vec![
            HostTensor::from_values("b.weight", vec![2, 2], &[1.0f32, 2.0, 3.0, 4.0]),
            HostTensor::from_values("a.ids", vec![3], &[1i64, -2, 3]),
            HostTensor::from_values("mask", vec![3], &[1u8, 0, 1]),
            HostTensor::from_f32_as("a.half", vec![2], &[0.5, -1.25], Dtype::BF16).unwrap(),
        ]
    }

    #[test]
    fn equal_content_gives_equal_bytes_whatever_the_insertion_order() {
        let t = sample();
        let mut rev = t.clone();
        rev.reverse();
        // BTreeMap sorts, but build the maps in opposite orders anyway.
        let mut m1 = BTreeMap::new();
        for (k, v) in [("format", "pt"), ("step", "7"), ("alpha", "x"), ("zeta", "y")] {
            m1.insert(k.to_string(), v.to_string());
        }
        let mut m2 = BTreeMap::new();
        for (k, v) in [("zeta", "y"), ("alpha", "x"), ("step", "7"), ("format", "pt")] {
            m2.insert(k.to_string(), v.to_string());
        }
        let p = Path::new("<test>");
        let a = serialize(&t, &m1, p).unwrap();
        let b = serialize(&rev, &m2, p).unwrap();
        assert_eq!(a, b);
        let header = std::str::from_utf8(&a[8..8 + u64::from_le_bytes(a[..8].try_into().unwrap()) as usize]).unwrap();
        assert!(header.starts_with(r#"{"__metadata__":{"alpha":"x","format":"pt","step":"7","zeta":"y"},"a.ids""#), "{header}");
        // written files have the same bytes
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("x.safetensors"), &rev, &m1).unwrap();
        assert_eq!(std::fs::read(dir.path().join("x.safetensors")).unwrap(), a);
    }

    #[test]
    fn layout_matches_upstream_serialize() {
        // With at most one metadata entry upstream's hash order is fixed, so the bytes must agree.
        let t = sample();
        let views: Vec<(String, ::safetensors::tensor::TensorView)> = t
            .iter()
            .map(|t| (t.name.clone(), ::safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap()))
            .collect();
        let want = ::safetensors::serialize(views, Some(meta(&[("format", "pt")]).into_iter().collect())).unwrap();
        assert_eq!(serialize(&t, &meta(&[("format", "pt")]), Path::new("<test>")).unwrap(), want);
    }

    #[test]
    fn every_dtype_decodes_to_the_expected_values() {
        let vals = [0.5f32, -1.25, 3.0, 65504.0];
        let f16: Vec<u8> = vals.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        let bf16: Vec<u8> = vals.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
        assert_eq!(decode::<f32>("x", Dtype::F32, &encode(&vals)).unwrap(), vals);
        assert_eq!(decode::<f32>("x", Dtype::F16, &f16).unwrap(), vals);
        // 65504 is not a bf16 value: it rounds to 65536
        assert_eq!(decode::<f32>("x", Dtype::BF16, &bf16).unwrap(), [0.5, -1.25, 3.0, 65536.0]);
        assert_eq!(encode_f32(&vals, Dtype::F16).unwrap(), f16);
        assert_eq!(encode_f32(&vals, Dtype::BF16).unwrap(), bf16);
        assert_eq!(decode::<f64>("x", Dtype::F64, &encode(&[1.5f64, -0.1])).unwrap(), [1.5, -0.1]);
        assert_eq!(decode::<i64>("x", Dtype::I64, &encode(&[-3i64, 1 << 40])).unwrap(), [-3, 1 << 40]);
        let i32s: Vec<u8> = [-3i32, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(decode::<i64>("x", Dtype::I32, &i32s).unwrap(), [-3, 7]);
        assert_eq!(decode::<u32>("x", Dtype::U32, &encode(&[9u32, u32::MAX])).unwrap(), [9, u32::MAX]);
        assert_eq!(decode::<u64>("x", Dtype::U64, &encode(&[u64::MAX])).unwrap(), [u64::MAX]);
        assert_eq!(decode::<u8>("x", Dtype::U8, &[4, 5]).unwrap(), [4, 5]);
        // dtypes that do not decode into the asked type, and ragged byte counts
        for (dtype, bytes) in [(Dtype::I64, vec![0u8; 8]), (Dtype::F64, vec![0; 8]), (Dtype::F8_E4M3, vec![0; 2])] {
            assert!(matches!(decode::<f32>("t", dtype, &bytes), Err(EdaError::UnsupportedDType { ref name, .. }) if name == "t"));
        }
        assert!(matches!(decode::<u32>("t", Dtype::F32, &[0; 4]), Err(EdaError::UnsupportedDType { .. })));
        assert!(matches!(decode_into::<f32>("t", Dtype::F32, &[0; 7], &mut [0.0; 2]), Err(EdaError::Mismatch { .. })));
        assert!(matches!(encode_f32(&vals, Dtype::I32), Err(EdaError::InvalidArgument(_))));
    }

    #[test]
    fn reading_checks_names_shapes_and_dtypes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        write(&path, &sample(), &meta(&[("format", "pt")])).unwrap();
        let f = SafetensorsFile::open(&path).unwrap();
        assert_eq!(f.names(), ["a.half", "a.ids", "b.weight", "mask"]);
        assert_eq!(f.metadata(), &meta(&[("format", "pt")]));
        assert_eq!(f.read::<f32>("b.weight", &[2, 2]).unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(f.read::<f32>("a.half", &[2]).unwrap(), [0.5, -1.25]);
        assert_eq!(f.read::<i64>("a.ids", &[3]).unwrap(), [1, -2, 3]);
        assert!(f.contains("mask") && !f.contains("nope"));
        assert!(matches!(f.tensor("nope"), Err(EdaError::MissingTensor { ref name, ref file }) if name == "nope" && file == &path));
        let e = f.read::<f32>("b.weight", &[4]).unwrap_err();
        assert!(matches!(e, EdaError::ShapeMismatch { ref name, ref actual, .. } if name == "b.weight" && actual == &vec![2, 2]), "{e}");
        assert!(matches!(f.read::<f32>("a.ids", &[3]), Err(EdaError::UnsupportedDType { ref name, .. }) if name == "a.ids"));
    }

    #[test]
    fn truncated_corrupt_or_missing_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = serialize(&sample(), &meta(&[("format", "pt")]), Path::new("<test>")).unwrap();
        let path = dir.path().join("m.safetensors");
        for bad in [bytes[..bytes.len() - 1].to_vec(), bytes[..5].to_vec(), Vec::new(), b"\x05garbage".to_vec(), {
            let mut b = bytes.clone();
            b[8] = b'[';
            b
        }] {
            std::fs::write(&path, &bad).unwrap();
            let e = SafetensorsFile::open(&path).err().expect("corrupt file accepted");
            assert!(matches!(e, EdaError::Safetensors { path: ref p, .. } if p == &path), "{e}");
            assert!(matches!(SafetensorsFile::parse(bad.as_slice(), &path), Err(EdaError::Safetensors { .. })));
        }
        let missing = dir.path().join("absent.safetensors");
        assert!(matches!(SafetensorsFile::open(&missing), Err(EdaError::Io { ref path, .. }) if path == &missing));
    }

    #[test]
    fn bad_tensors_are_refused_when_writing() {
        let p = Path::new("out.safetensors");
        let m = BTreeMap::new();
        let short = HostTensor::new("w", Dtype::F32, vec![2], vec![0; 7]);
        assert!(matches!(serialize(&[short], &m, p), Err(EdaError::Safetensors { ref path, .. }) if path == p));
        let twice = [HostTensor::from_values("w", vec![1], &[1u8]), HostTensor::from_values("w", vec![1], &[2u8])];
        assert!(serialize(&twice, &m, p).is_err());
        assert!(serialize(&[HostTensor::from_values(METADATA_KEY, vec![1], &[1u8])], &m, p).is_err());
        // no metadata: no `__metadata__` key, and upstream reads it back
        let b = serialize(&[HostTensor::from_values("w", vec![1], &[1u8])], &m, p).unwrap();
        assert!(::safetensors::SafeTensors::deserialize(&b).is_ok());
        assert!(SafetensorsFile::parse(b.as_slice(), p).unwrap().metadata().is_empty());
    }
}
