// The only place that knows LibTorch versions differ: Debian's 1.13 on CPU machines and the
// PyTorch 2.x wheel on GPU machines. Everything version-specific goes through here.
#pragma once

#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <torch/version.h>

#define FRUGAL_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||         \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace frugal::compat {

/// Turns autocast on or off for `device` with `dtype` (the API became device-generic in 2.4).
inline void set_autocast(c10::DeviceType device, bool enabled, at::ScalarType dtype) {
#if FRUGAL_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(device, enabled);
  at::autocast::set_autocast_dtype(device, dtype);
#else
  if (device == c10::DeviceType::CUDA) {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

inline bool autocast_enabled(c10::DeviceType device) {
#if FRUGAL_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(device);
#else
  return device == c10::DeviceType::CUDA ? at::autocast::is_enabled()
                                         : at::autocast::is_cpu_enabled();
#endif
}

/// True when ATen has CPU kernels for _amp_foreach_non_finite_check_and_unscale_ and
/// _amp_update_scale_ (PyTorch 2.3+); CUDA has them in every version.
constexpr bool kAmpOpsOnCpu = FRUGAL_TORCH_AT_LEAST(2, 3);

}  // namespace frugal::compat
