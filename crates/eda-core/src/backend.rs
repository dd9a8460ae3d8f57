//! Device and precision selection.
//!
//! burn 0.22 carries the backend in the [`Device`]. eda uses the NdArray CPU backend by default;
//! the `wgpu` and `cuda` cargo features add GPU backends. The environment variable `EDA_DEVICE`
//! (`cpu`, `wgpu`, `cuda`, `cuda:N`) overrides the choice at run time, and `EDA_DTYPE`
//! (`f32`, `f16`, `bf16`) the compute precision of target models.
//!
//! Asking for a backend that is not compiled in, a device that does not exist, or a precision the
//! device cannot compute is a typed [`EdaError::Backend`] that names what is available, checked
//! here before any tensor is made (burn itself panics inside its kernels in those cases).

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, FloatDType};

use crate::{EdaError, Result};

/// A burn backend eda knows how to select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// NdArray on the host CPU (always compiled; the default).
    Cpu,
    /// wgpu: Vulkan, Metal or DirectX 12 GPUs, or a software Vulkan driver such as lavapipe
    /// (cargo feature `wgpu`).
    Wgpu,
    /// NVIDIA GPUs through CUDA (cargo feature `cuda`).
    Cuda,
}

impl Backend {
    /// Every backend eda can be built with, in preference order for [`default_device`].
    pub const ALL: [Backend; 3] = [Backend::Cuda, Backend::Wgpu, Backend::Cpu];

    /// The name used by `--device` and `EDA_DEVICE`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        }
    }

    /// The cargo feature that compiles this backend in (`None` for the CPU, always present).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Backend::Cpu => None,
            Backend::Wgpu => Some("wgpu"),
            Backend::Cuda => Some("cuda"),
        }
    }

    /// Whether this build includes the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Backend::Cpu => true,
            Backend::Wgpu => cfg!(feature = "wgpu"),
            Backend::Cuda => cfg!(feature = "cuda"),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The backends compiled into this build, CPU last.
///
/// ```
/// use eda_core::backend::{compiled_backends, Backend};
/// assert!(compiled_backends().contains(&Backend::Cpu));
/// ```
pub fn compiled_backends() -> Vec<Backend> {
    Backend::ALL.into_iter().filter(|b| b.is_compiled()).collect()
}

/// The GPU backends compiled into this build (empty in a default build).
pub fn compiled_gpu_backends() -> Vec<Backend> {
    compiled_backends().into_iter().filter(|b| *b != Backend::Cpu).collect()
}

fn compiled_list() -> String {
    compiled_backends().iter().map(|b| b.name()).collect::<Vec<_>>().join(", ")
}

fn not_compiled(requested: &str, backend: Backend) -> EdaError {
    EdaError::Backend {
        requested: requested.to_string(),
        reason: format!(
            "the `{backend}` backend is not compiled into this build (compiled: {}); rebuild with `--features {}`",
            compiled_list(),
            backend.feature().unwrap_or("")
        ),
    }
}

/// Parses a device name (`cpu`/`ndarray`, `wgpu`, `wgpu:N`, `cuda`, `cuda:N`) into its backend
/// and device index, without touching any hardware.
///
/// ```
/// use eda_core::backend::{parse_device_name, Backend};
/// assert_eq!(parse_device_name("cuda:1").unwrap(), (Backend::Cuda, 1));
/// assert_eq!(parse_device_name("cpu").unwrap(), (Backend::Cpu, 0));
/// assert!(parse_device_name("tpu").is_err());
/// ```
pub fn parse_device_name(name: &str) -> Result<(Backend, usize)> {
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => {
            let idx = i.parse::<usize>().map_err(|_| EdaError::Backend {
                requested: name.to_string(),
                reason: format!("`{i}` is not a device index (expected e.g. `cuda:0`)"),
            })?;
            (k, idx)
        }
        None => (name, 0),
    };
    let backend = match kind.to_ascii_lowercase().as_str() {
        "cpu" | "ndarray" => Backend::Cpu,
        "wgpu" | "vulkan" => Backend::Wgpu,
        "cuda" | "gpu" => Backend::Cuda,
        _ => {
            return Err(EdaError::Backend {
                requested: name.to_string(),
                reason: format!("unknown device (known: cpu, wgpu[:N], cuda[:N]; compiled: {})", compiled_list()),
            })
        }
    };
    if backend == Backend::Cpu && index != 0 {
        return Err(EdaError::Backend { requested: name.to_string(), reason: "the CPU backend has one device, `cpu`".into() });
    }
    Ok((backend, index))
}

/// The device named by `name` (`cpu`/`ndarray`, `wgpu`, `wgpu:N`, `cuda`, `cuda:N`).
///
/// GPU devices are looked up before they are returned: a backend that is not compiled in, or
/// an index with no device behind it, is an [`EdaError::Backend`] naming the compiled backends,
/// the feature to enable and the devices found.
///
/// ```
/// let d = eda_core::backend::device_from_name("cpu").unwrap();
/// let e = eda_core::backend::device_from_name("tpu").unwrap_err();
/// assert!(e.to_string().contains("compiled: "));
/// # let _ = d;
/// ```
#[allow(deprecated)] // burn marks NdArray deprecated in favour of Flex; it is the design's default CPU backend.
pub fn device_from_name(name: &str) -> Result<Device> {
    let (backend, index) = parse_device_name(name)?;
    if !backend.is_compiled() {
        return Err(not_compiled(name, backend));
    }
    match backend {
        Backend::Cpu => Ok(Device::ndarray()),
        Backend::Wgpu => gpu::wgpu_device(name, index),
        Backend::Cuda => gpu::cuda_device(name, index),
    }
}

/// The default device: `EDA_DEVICE` if set, else the first compiled GPU backend that has a
/// device (CUDA, then wgpu), else the CPU.
pub fn default_device() -> Result<Device> {
    if let Ok(name) = std::env::var("EDA_DEVICE") {
        return device_from_name(&name);
    }
    for backend in compiled_gpu_backends() {
        if let Ok(d) = device_from_name(backend.name()) {
            return Ok(d);
        }
    }
    device_from_name("cpu")
}

/// The backend a device belongs to.
///
/// ```
/// use eda_core::backend::{backend_of, device_from_name, Backend};
/// assert_eq!(backend_of(&device_from_name("cpu").unwrap()), Backend::Cpu);
/// ```
pub fn backend_of(device: &Device) -> Backend {
    if is_cpu(device) {
        return Backend::Cpu;
    }
    // burn exposes no backend tag on `Device`; its Debug form names the runtime.
    if format!("{device:?}").to_ascii_lowercase().contains("cuda") {
        Backend::Cuda
    } else {
        Backend::Wgpu
    }
}

/// Whether `device` is the host CPU backend (NdArray), whose tensors live in host memory.
#[allow(deprecated)]
pub fn is_cpu(device: &Device) -> bool {
    *device == Device::ndarray()
}

/// The floating-point precision models compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit IEEE floats (the CPU default and the reference).
    #[default]
    F32,
    /// IEEE half precision (10-bit mantissa, range ±65504).
    F16,
    /// bfloat16 (8-bit mantissa, f32's range): what most checkpoints are stored in.
    BF16,
}

impl Precision {
    /// The burn dtype.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::BF16 => FloatDType::BF16,
        }
    }

    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 | Precision::BF16 => 2,
        }
    }

    /// The name used by `--dtype` and `EDA_DTYPE`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::BF16 => "bf16",
        }
    }

    /// `EDA_DTYPE` if set (and valid), else f32.
    pub fn from_env() -> Result<Self> {
        match std::env::var("EDA_DTYPE") {
            Ok(v) => v.parse(),
            Err(_) => Ok(Precision::F32),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = EdaError;

    /// ```
    /// use eda_core::backend::Precision;
    /// assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::BF16);
    /// assert!("f8".parse::<Precision>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(Precision::F32),
            "f16" | "float16" | "fp16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::BF16),
            other => Err(EdaError::InvalidArgument(format!("unknown dtype `{other}` (expected f32, f16 or bf16)"))),
        }
    }
}

/// Checks that `device` can compute in `precision`, before any tensor of that type is made.
///
/// NdArray computes only in f32 (and f64); GPU backends report what their device supports
/// (bf16 needs hardware or driver support that many Vulkan devices lack).
///
/// ```
/// use eda_core::backend::{check_precision, device_from_name, Precision};
/// let cpu = device_from_name("cpu").unwrap();
/// assert!(check_precision(&cpu, Precision::F32).is_ok());
/// let e = check_precision(&cpu, Precision::BF16).unwrap_err();
/// assert!(e.to_string().contains("bf16"));
/// ```
pub fn check_precision(device: &Device, precision: Precision) -> Result<()> {
    if precision == Precision::F32 {
        return Ok(());
    }
    let supported = std::panic::catch_unwind(|| device.supports_dtype(precision.float_dtype())).unwrap_or(false);
    if supported {
        Ok(())
    } else {
        let backend = backend_of(device);
        let hint = if backend == Backend::Cpu {
            "the CPU backend computes in f32 only; use a GPU device (`--device wgpu` or `cuda`) for half precision".to_string()
        } else {
            "this device does not support it; use `--compute-dtype f32`, or `f16` where bf16 is missing".to_string()
        };
        Err(EdaError::Backend {
            requested: format!("{backend} with dtype {precision}"),
            reason: format!("{precision} is not computable here: {hint}"),
        })
    }
}

/// The device named by `name`, set to compute in `precision`: every float tensor created on it
/// afterwards (weights as they load, masks, caches, activations) has that dtype.
///
/// burn keeps one default float dtype per device for the whole process and fixes it when the
/// first tensor is made there, so ask for the precision before loading anything on the device.
/// Asking again for the dtype already in force is fine; asking for another one, or for a dtype
/// the device cannot compute ([`check_precision`]), is an [`EdaError::Backend`].
///
/// ```
/// use eda_core::backend::{device_with_precision, Precision};
/// assert!(device_with_precision("cpu", Precision::F32).is_ok());
/// assert!(device_with_precision("cpu", Precision::BF16).is_err());
/// ```
pub fn device_with_precision(name: &str, precision: Precision) -> Result<Device> {
    let mut device = device_from_name(name)?;
    set_precision(&mut device, precision)?;
    Ok(device)
}

/// Sets the compute precision of `device` (see [`device_with_precision`]).
pub fn set_precision(device: &mut Device, precision: Precision) -> Result<()> {
    check_precision(device, precision)?;
    let current = device.settings().float_dtype;
    if current == precision.float_dtype() {
        return Ok(());
    }
    device.configure(precision.float_dtype()).map_err(|e| EdaError::Backend {
        requested: format!("{} with dtype {precision}", backend_of(device)),
        reason: format!(
            "the device already computes in {current:?} in this process and burn cannot change it ({e}); set the dtype before loading any model"
        ),
    })
}

/// The float dtype `device` currently creates tensors in.
pub fn precision_of(device: &Device) -> Precision {
    match device.settings().float_dtype {
        FloatDType::F16 => Precision::F16,
        FloatDType::BF16 => Precision::BF16,
        _ => Precision::F32,
    }
}

/// Copies a float tensor to the host as a `Vec<f32>` (row-major), whatever its dtype.
pub fn to_vec_f32<const D: usize>(t: burn::tensor::Tensor<D>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| EdaError::InvalidArgument(format!("tensor readback failed: {e:?}")))
}

/// GPU device lookup; compiled only with a GPU feature.
mod gpu {
    #[allow(unused_imports)]
    use burn::tensor::{Device, DeviceType};

    #[allow(unused_imports)]
    use crate::{EdaError, Result};

    /// The devices a backend enumerates, or the panic message when enumeration itself fails
    /// (no driver library, for instance).
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    fn enumerate(kind: DeviceType) -> std::result::Result<Vec<Device>, String> {
        // The panic hook is process-global: swap it under a lock so that concurrent lookups
        // restore the original hook, not each other's silent one.
        static HOOK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = HOOK.lock().unwrap_or_else(|p| p.into_inner());
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = std::panic::catch_unwind(move || Device::enumerate(kind).into_vec());
        std::panic::set_hook(prev);
        r.map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into())
        })
    }

    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    fn pick(requested: &str, found: std::result::Result<Vec<Device>, String>, index: usize, hint: &str) -> Result<Device> {
        match found {
            Ok(devices) if index < devices.len() => Ok(devices[index].clone()),
            Ok(devices) if devices.is_empty() => {
                Err(EdaError::Backend { requested: requested.into(), reason: format!("no device found; {hint}") })
            }
            Ok(devices) => Err(EdaError::Backend {
                requested: requested.into(),
                reason: format!("device index {index} does not exist ({} device(s) found: {:?})", devices.len(), devices),
            }),
            Err(msg) => {
                Err(EdaError::Backend { requested: requested.into(), reason: format!("the backend failed to start ({msg}); {hint}") })
            }
        }
    }

    #[cfg(feature = "wgpu")]
    pub(super) fn wgpu_device(requested: &str, index: usize) -> Result<Device> {
        pick(
            requested,
            enumerate(DeviceType::Wgpu),
            index,
            "install a Vulkan driver (for a software one on Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`)",
        )
    }

    #[cfg(not(feature = "wgpu"))]
    pub(super) fn wgpu_device(requested: &str, _index: usize) -> Result<Device> {
        Err(super::not_compiled(requested, super::Backend::Wgpu))
    }

    #[cfg(feature = "cuda")]
    pub(super) fn cuda_device(requested: &str, index: usize) -> Result<Device> {
        pick(requested, enumerate(DeviceType::Cuda), index, "check the NVIDIA driver (`nvidia-smi`)")
    }

    #[cfg(not(feature = "cuda"))]
    pub(super) fn cuda_device(requested: &str, _index: usize) -> Result<Device> {
        Err(super::not_compiled(requested, super::Backend::Cuda))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_backends_name_the_feature() {
        for b in [Backend::Wgpu, Backend::Cuda] {
            if !b.is_compiled() {
                let e = device_from_name(b.name()).unwrap_err().to_string();
                assert!(e.contains(&format!("--features {}", b.name())), "{e}");
                assert!(e.contains("compiled: "), "{e}");
            }
        }
        assert!(device_from_name("cpu:1").is_err());
        assert!(device_from_name("cuda:x").is_err());
    }

    #[test]
    fn precision_names_roundtrip() {
        for p in [Precision::F32, Precision::F16, Precision::BF16] {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{}\"", p.name()));
        }
    }
}
