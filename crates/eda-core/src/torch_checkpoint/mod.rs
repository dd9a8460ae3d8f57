//! PyTorch checkpoints (`torch.save` of a state dict, the `pytorch_model.bin` of many HF and
//! EAGLE repositories), read and written without Python.
//!
//! * [`write()`] / [`serialize`] produce the zip archive `torch.save` writes (format version 3): a
//!   protocol-2 pickle of an `OrderedDict` name → tensor plus one uncompressed record per tensor,
//!   each aligned to 64 bytes. `torch.load(path, weights_only=True)` accepts it. Writes are
//!   atomic (temp file, fsync, rename).
//! * [`read`] / [`parse`] load such an archive back into [`HostTensor`]s, in the order the
//!   pickle lists them. The pickle is interpreted by a small machine that never runs code; views
//!   with offsets or strides (tied or sliced weights) are materialised. The legacy pre-1.6
//!   (non-zip) format and big-endian archives are refused with a clear error.
//!
//! ```
//! use eda_core::safetensors::HostTensor;
//! use eda_core::torch_checkpoint;
//!
//! let w = HostTensor::from_values("fc.weight", vec![2, 2], &[1.0f32, 2.0, 3.0, 4.0]);
//! let bytes = torch_checkpoint::serialize(&[w.clone()]).unwrap();
//! let back = torch_checkpoint::parse(&bytes, "<memory>".as_ref()).unwrap();
//! assert_eq!(back, vec![w]);
//! ```

mod pickle;
mod zip;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use pickle::{TensorView, Value};

use crate::safetensors::{Dtype, HostTensor};
use crate::{io, EdaError, Result};

/// Name of the archive's top folder (PyTorch accepts any; `torch.save` uses the file stem).
const PREFIX: &str = "archive";

/// The `torch.*Storage` class of each dtype PyTorch state dicts use.
const STORAGE_TYPES: [(Dtype, &str); 10] = [
    (Dtype::F32, "FloatStorage"),
    (Dtype::F16, "HalfStorage"),
    (Dtype::BF16, "BFloat16Storage"),
    (Dtype::F64, "DoubleStorage"),
    (Dtype::I64, "LongStorage"),
    (Dtype::I32, "IntStorage"),
    (Dtype::I16, "ShortStorage"),
    (Dtype::I8, "CharStorage"),
    (Dtype::U8, "ByteStorage"),
    (Dtype::BOOL, "BoolStorage"),
];

fn storage_type(dtype: Dtype) -> Option<&'static str> {
    STORAGE_TYPES.iter().find(|(d, _)| *d == dtype).map(|(_, s)| *s)
}

fn dtype_of(storage_type: &str) -> Option<Dtype> {
    STORAGE_TYPES.iter().find(|(_, s)| *s == storage_type).map(|(d, _)| *d)
}

/// Serialises `tensors` as a `torch.save` archive of an `OrderedDict` (in the given order).
///
/// Errors with [`EdaError::TorchCheckpoint`] for a dtype PyTorch has no storage for, bytes that
/// do not match a tensor's shape, a name used twice, or a record over 4 GiB.
pub fn serialize(tensors: &[HostTensor]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_to(&mut out, tensors, Path::new("<memory>"))?;
    Ok(out)
}

/// Atomically writes `tensors` to `path` as a `torch.save` archive (same bytes as
/// [`serialize`]).
pub fn write(path: &Path, tensors: &[HostTensor]) -> Result<()> {
    check(tensors, path)?;
    io::atomic_write_with(path, |w| write_to(w, tensors, path).map_err(|e| std::io::Error::other(e.to_string())))
}

fn check<'a>(tensors: &'a [HostTensor], path: &Path) -> Result<Vec<(&'a str, &'static str, &'a [usize])>> {
    let err = |message: String| EdaError::TorchCheckpoint { path: path.to_path_buf(), message };
    let mut seen = std::collections::HashSet::new();
    tensors
        .iter()
        .map(|t| {
            if !seen.insert(t.name.as_str()) {
                return Err(err(format!("tensor `{}` is given twice", t.name)));
            }
            let st =
                storage_type(t.dtype).ok_or_else(|| err(format!("tensor `{}`: dtype {:?} has no PyTorch storage", t.name, t.dtype)))?;
            let expected = t.shape.iter().product::<usize>() * (t.dtype.bitsize() / 8);
            if t.data.len() != expected {
                return Err(err(format!("tensor `{}` has {} bytes, its shape {:?} needs {expected}", t.name, t.data.len(), t.shape)));
            }
            Ok((t.name.as_str(), st, t.shape.as_slice()))
        })
        .collect()
}

fn write_to<W: Write>(out: W, tensors: &[HostTensor], path: &Path) -> Result<()> {
    let entries = check(tensors, path)?;
    let io_err = |e: std::io::Error| EdaError::TorchCheckpoint { path: path.to_path_buf(), message: e.to_string() };
    let mut zip = zip::ZipWriter::new(out);
    zip.add(&format!("{PREFIX}/data.pkl"), &pickle::write_state_dict(&entries)).map_err(io_err)?;
    zip.add(&format!("{PREFIX}/byteorder"), b"little").map_err(io_err)?;
    for (i, t) in tensors.iter().enumerate() {
        zip.add(&format!("{PREFIX}/data/{i}"), &t.data).map_err(io_err)?;
    }
    zip.add(&format!("{PREFIX}/version"), b"3\n").map_err(io_err)?;
    zip.finish().map_err(io_err)?;
    Ok(())
}

/// Memory-maps and reads the state dict in the `torch.save` archive at `path` (see [`parse`]).
///
/// Errors: [`EdaError::Io`] when the file cannot be opened, otherwise as [`parse`].
pub fn read(path: &Path) -> Result<Vec<HostTensor>> {
    let file = std::fs::File::open(path).map_err(|e| EdaError::io(path, e))?;
    // SAFETY: the map is read-only and dropped before returning; a concurrent writer could
    // change the bytes under us, which only yields a parse error or wrong values, as a
    // concurrent write to any input would.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| EdaError::io(path, e))?;
    parse(&map, path)
}

/// Reads the state dict in `bytes` (a `torch.save` zip archive) into tensors, in pickle order.
/// The pickle must evaluate to a dict (or `OrderedDict`) whose values are tensors; an EAGLE or HF
/// `pytorch_model.bin` is such a dict. `path` names the source in errors.
///
/// Errors with [`EdaError::TorchCheckpoint`] naming the problem: not a zip archive (the legacy
/// format), a missing or corrupt record (CRC), a big-endian archive, an unsupported pickle
/// opcode, a value that is not a tensor, a storage dtype eda does not know, or a view that reads
/// past its storage.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Vec<HostTensor>> {
    let err = |message: String| EdaError::TorchCheckpoint { path: path.to_path_buf(), message };
    if bytes.starts_with(&[0x80]) {
        return Err(err("legacy (pre-1.6, non-zip) torch.save format; re-save it with a current PyTorch".into()));
    }
    let entries = zip::read_entries(bytes).map_err(err)?;
    let prefix =
        entries.first().and_then(|e| e.name.split_once('/')).map(|(p, _)| p.to_string()).ok_or_else(|| err("empty archive".into()))?;
    let records: HashMap<&str, &zip::Entry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let record = |name: &str| -> Result<&[u8]> {
        let full = format!("{prefix}/{name}");
        let e = records.get(full.as_str()).ok_or_else(|| err(format!("record `{full}` is missing")))?;
        zip::entry_data(bytes, e).map_err(err)
    };
    if records.contains_key(format!("{prefix}/byteorder").as_str()) && record("byteorder")? != b"little" {
        return Err(err("big-endian archive".into()));
    }
    let root = pickle::read(record("data.pkl")?).map_err(|m| err(format!("data.pkl: {m}")))?;
    let Value::Dict(items) = root else { return Err(err("data.pkl does not hold a dictionary of tensors".into())) };
    items
        .into_iter()
        .map(|(k, v)| {
            let Value::Str(name) = k else { return Err(err(format!("a state-dict key is {k:?}, not a string"))) };
            let Value::Tensor(view) = v else { return Err(err(format!("`{name}` is not a tensor"))) };
            let storage = record(&format!("data/{}", view.key))?;
            materialise(&name, &view, storage).map_err(err)
        })
        .collect()
}

/// Copies the elements `view` selects from `storage` into a contiguous tensor.
fn materialise(name: &str, view: &TensorView, storage: &[u8]) -> std::result::Result<HostTensor, String> {
    let dtype = dtype_of(&view.storage_type).ok_or_else(|| format!("`{name}`: unknown storage type torch.{}", view.storage_type))?;
    if view.size.len() != view.stride.len() {
        return Err(format!("`{name}`: size {:?} and stride {:?} differ in rank", view.size, view.stride));
    }
    let es = dtype.bitsize() / 8;
    let numel: usize = view.size.iter().product();
    // Highest element index touched; checked before any copy.
    let last = view.offset + view.size.iter().zip(&view.stride).map(|(&d, &s)| d.saturating_sub(1) * s).sum::<usize>();
    if numel > 0 && (last + 1) * es > storage.len() {
        return Err(format!("`{name}`: view {:?} at offset {} reads past its storage of {} bytes", view.size, view.offset, storage.len()));
    }
    let contiguous = {
        let mut expect = 1;
        view.size.iter().zip(&view.stride).rev().all(|(&d, &s)| {
            let ok = d <= 1 || s == expect;
            expect *= d;
            ok
        })
    };
    let data = if numel == 0 {
        Vec::new()
    } else if contiguous {
        storage[view.offset * es..(view.offset + numel) * es].to_vec()
    } else {
        let mut out = Vec::with_capacity(numel * es);
        let mut idx = vec![0usize; view.size.len()];
        for _ in 0..numel {
            let at = view.offset + idx.iter().zip(&view.stride).map(|(i, s)| i * s).sum::<usize>();
            out.extend_from_slice(&storage[at * es..(at + 1) * es]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < view.size[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out
    };
    Ok(HostTensor::new(name, dtype, view.size.clone(), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<HostTensor> {
        vec![
            HostTensor::from_values("embed_tokens.weight", vec![3, 2], &[0.5f32, -1.0, 2.0, 3.5, -4.0, 1e-3]),
            HostTensor::from_f32_as("fc.bias", vec![2], &[1.0, -2.0], Dtype::BF16).unwrap(),
            HostTensor::from_values("ids", vec![4], &[1i64, -7, 3, 1 << 40]),
            HostTensor::from_values("scalar", vec![], &[9.0f32]),
        ]
    }

    #[test]
    fn archives_round_trip_every_dtype_and_shape() {
        let t = sample();
        let bytes = serialize(&t).unwrap();
        assert_eq!(parse(&bytes, "x".as_ref()).unwrap(), t);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pytorch_model.bin");
        write(&p, &t).unwrap();
        assert_eq!(read(&p).unwrap(), t);
    }

    #[test]
    fn strided_and_offset_views_are_materialised() {
        let storage: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
        // The transpose of a 2x3 matrix, and its second row as an offset view.
        let t = TensorView { storage_type: "FloatStorage".into(), key: "0".into(), offset: 0, size: vec![3, 2], stride: vec![1, 3] };
        let got = materialise("t", &t, &storage).unwrap();
        assert_eq!(crate::safetensors::decode::<f32>("t", Dtype::F32, &got.data).unwrap(), vec![0., 3., 1., 4., 2., 5.]);
        let row = TensorView { offset: 3, size: vec![3], stride: vec![1], ..t.clone() };
        let got = materialise("row", &row, &storage).unwrap();
        assert_eq!(crate::safetensors::decode::<f32>("row", Dtype::F32, &got.data).unwrap(), vec![3., 4., 5.]);
        let past = TensorView { offset: 4, size: vec![3], stride: vec![1], ..t };
        assert!(materialise("past", &past, &storage).unwrap_err().contains("past its storage"));
    }

    #[test]
    fn bad_archives_are_typed_errors() {
        let bytes = serialize(&sample()).unwrap();
        let is_torch_err = |r: Result<Vec<HostTensor>>| matches!(r, Err(EdaError::TorchCheckpoint { .. }));
        assert!(is_torch_err(parse(b"", "x".as_ref())));
        assert!(is_torch_err(parse(&[0x80, 2, b'.'], "x".as_ref())), "legacy format");
        assert!(is_torch_err(parse(&bytes[..bytes.len() / 2], "x".as_ref())));
        // Corrupt one byte of tensor data: the CRC catches it.
        let mut bad = bytes.clone();
        let at = bad.windows(4).position(|w| w == 0.5f32.to_le_bytes()).unwrap();
        bad[at] ^= 1;
        let e = parse(&bad, "model.bin".as_ref()).unwrap_err();
        assert!(e.to_string().contains("model.bin") && e.to_string().contains("CRC"), "{e}");
        let dup = vec![sample()[0].clone(), sample()[0].clone()];
        assert!(matches!(serialize(&dup), Err(EdaError::TorchCheckpoint { .. })));
        let short = HostTensor::new("w", Dtype::F32, vec![2], vec![0; 7]);
        assert!(matches!(serialize(&[short]), Err(EdaError::TorchCheckpoint { .. })));
    }
}
