//! Device selection.
//!
//! burn 0.22 carries the backend in the [`Device`]. eda uses the NdArray CPU backend by default;
//! the `wgpu` and `cuda` cargo features add GPU backends. The environment variable `EDA_DEVICE`
//! (`cpu`, `wgpu`, `cuda`, `cuda:N`) overrides the choice at run time.

use burn::tensor::Device;

use crate::{EdaError, Result};

/// The device named by `name` (`cpu`/`ndarray`, `wgpu`, `cuda`, `cuda:N`).
///
/// ```
/// let d = eda_core::backend::device_from_name("cpu").unwrap();
/// assert!(eda_core::backend::device_from_name("tpu").is_err());
/// # let _ = d;
/// ```
#[allow(deprecated)] // burn marks NdArray deprecated in favour of Flex; it is the design's default CPU backend.
pub fn device_from_name(name: &str) -> Result<Device> {
    match name {
        "cpu" | "ndarray" => Ok(Device::ndarray()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(Default::default())),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        #[cfg(feature = "cuda")]
        n if n.starts_with("cuda:") => {
            let idx: usize = n[5..].parse().map_err(|_| EdaError::InvalidArgument(format!("bad device `{n}`")))?;
            Ok(Device::cuda(idx))
        }
        other => Err(EdaError::InvalidArgument(format!(
            "unknown or disabled device `{other}` (enabled: cpu{}{})",
            if cfg!(feature = "wgpu") { ", wgpu" } else { "" },
            if cfg!(feature = "cuda") { ", cuda" } else { "" }
        ))),
    }
}

/// The default device: `EDA_DEVICE` if set, else CUDA, then wgpu when compiled in, else CPU.
pub fn default_device() -> Result<Device> {
    if let Ok(name) = std::env::var("EDA_DEVICE") {
        return device_from_name(&name);
    }
    let name = if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "wgpu") {
        "wgpu"
    } else {
        "cpu"
    };
    device_from_name(name)
}

/// Copies a float tensor to the host as a `Vec<f32>` (row-major).
pub fn to_vec_f32<const D: usize>(t: burn::tensor::Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| EdaError::InvalidArgument(format!("tensor readback failed: {e:?}")))
}
