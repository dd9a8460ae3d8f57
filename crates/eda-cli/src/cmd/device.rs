//! `--device` / `--compute-dtype`: which burn device a command runs on, in which float precision.

use std::path::Path;

use burn::tensor::Device;
use eda_core::backend::{backend_of, check_precision, default_device, device_from_name, set_precision, Backend, Precision};

/// Compute precision of the models a command loads (`--compute-dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ComputeDtype {
    /// f32 on the CPU; on a GPU the checkpoint's stored dtype (`torch_dtype` in `config.json`)
    /// when the device computes it, else f32.
    Auto,
    /// 32-bit floats everywhere (the reference).
    F32,
    /// IEEE half precision (GPU backends that support it).
    F16,
    /// bfloat16 (GPU backends that support it).
    Bf16,
}

impl ComputeDtype {
    /// `EDA_DTYPE` when `flag` is absent, else `auto`.
    fn resolve(flag: Option<ComputeDtype>) -> eda_core::Result<ComputeDtype> {
        if let Some(f) = flag {
            return Ok(f);
        }
        match std::env::var("EDA_DTYPE") {
            Ok(v) if v.eq_ignore_ascii_case("auto") => Ok(ComputeDtype::Auto),
            Ok(v) => Ok(match v.parse::<Precision>()? {
                Precision::F32 => ComputeDtype::F32,
                Precision::F16 => ComputeDtype::F16,
                Precision::BF16 => ComputeDtype::Bf16,
            }),
            Err(_) => Ok(ComputeDtype::Auto),
        }
    }
}

/// The checkpoint's stored float dtype, when it is a half type (`config.json`'s `torch_dtype`).
fn stored_half_dtype(checkpoint: &Path) -> Option<Precision> {
    let cfg = eda_models::load_config(checkpoint).ok()?;
    match cfg.torch_dtype.as_deref()? {
        "bfloat16" => Some(Precision::BF16),
        "float16" => Some(Precision::F16),
        _ => None,
    }
}

/// Opens `device` in f32 and loads `target`, whose embedding and LM head complete a draft that
/// is being converted (`eda export`, `eda import-eagle`).
pub fn conversion_target(device: &super::args::DeviceArgs, target: &Path) -> eda_core::Result<(Device, eda_models::Target)> {
    let device = open(device.device.as_deref(), Some(ComputeDtype::F32), None)?;
    let target = eda_models::Target::from_pretrained(target, &device)?;
    Ok((device, target))
}

/// Opens the device named by `name` (default: `EDA_DEVICE` or the best compiled-in backend) and
/// sets its compute precision from `dtype` (default: `EDA_DTYPE` or `auto`), for the models of
/// `checkpoint`. An explicit half dtype the device cannot compute is an error; `auto` falls
/// back to f32 with a log line.
pub fn open(name: Option<&str>, dtype: Option<ComputeDtype>, checkpoint: Option<&Path>) -> eda_core::Result<Device> {
    let mut device = match name {
        Some(n) => device_from_name(n)?,
        None => default_device()?,
    };
    let precision = match ComputeDtype::resolve(dtype)? {
        ComputeDtype::F32 => Precision::F32,
        ComputeDtype::F16 => Precision::F16,
        ComputeDtype::Bf16 => Precision::BF16,
        ComputeDtype::Auto => match (backend_of(&device), checkpoint.and_then(stored_half_dtype)) {
            (Backend::Cpu, _) | (_, None) => Precision::F32,
            (_, Some(p)) if check_precision(&device, p).is_ok() => p,
            (b, Some(p)) => {
                tracing::warn!(backend = %b, stored = %p, "the device cannot compute the checkpoint's stored dtype; computing in f32");
                Precision::F32
            }
        },
    };
    set_precision(&mut device, precision)?;
    tracing::info!(device = ?device, precision = %precision, "device ready");
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_half_precision_is_a_typed_error_and_auto_is_f32() {
        let e = open(Some("cpu"), Some(ComputeDtype::Bf16), None).unwrap_err();
        assert!(matches!(e, eda_core::EdaError::Backend { .. }), "{e}");
        assert!(e.to_string().contains("bf16"), "{e}");
        let d = open(Some("cpu"), Some(ComputeDtype::Auto), None).unwrap();
        assert_eq!(eda_core::backend::precision_of(&d), Precision::F32);
    }

    #[test]
    fn a_backend_that_is_not_compiled_names_the_feature() {
        if !Backend::Cuda.is_compiled() {
            let e = open(Some("cuda"), None, None).unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
