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
/// The dtype is set first: where it is refused (1.13's CPU autocast takes only bf16), autocast is
/// left as it was.
inline void set_autocast(c10::DeviceType device, bool enabled, at::ScalarType dtype) {
#if FRUGAL_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(device, dtype);
  at::autocast::set_autocast_enabled(device, enabled);
#else
  if (device == c10::DeviceType::CUDA) {
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(enabled);
  } else {
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
}

/// The dtype autocast uses on `device` (while enabled).
inline at::ScalarType autocast_dtype(c10::DeviceType device) {
#if FRUGAL_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(device);
#else
  return device == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                         : at::autocast::get_autocast_cpu_dtype();
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

/// True when CPU autocast accepts fp16 ("16-mixed" on CPU). 1.13 refuses it ("AutocastCPU only
/// support Bfloat16"); the device-generic setter of 2.4 has no such check and CPU fp16 autocast
/// was documented from 2.4/2.5 (pytorch#96093, #136082). Not yet checked on a real 2.x build.
constexpr bool kCpuFp16Autocast = FRUGAL_TORCH_AT_LEAST(2, 4);

}  // namespace frugal::compat

// ---- out-of-memory errors (appended for the batch-size finder) ----
#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#ifdef FRUGAL_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <cstring>
#include <exception>

namespace frugal::compat {

/// True when `error` reports exhausted memory. The CUDA caching allocator raises
/// c10::OutOfMemoryError from 1.13 on (2.x too); other paths raise a plain c10::Error whose
/// message says so in every version: cudaMalloc outside the allocator ("CUDA error: out of
/// memory"), cuBLAS workspaces ("CUBLAS_STATUS_ALLOC_FAILED") and the CPU allocator
/// ("DefaultCPUAllocator: not enough memory").
inline bool is_out_of_memory(const std::exception& error) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&error) != nullptr) return true;
  if (dynamic_cast<const c10::Error*>(&error) == nullptr) return false;
  const char* what = error.what();
  return std::strstr(what, "out of memory") != nullptr ||
         std::strstr(what, "CUBLAS_STATUS_ALLOC_FAILED") != nullptr ||
         std::strstr(what, "not enough memory") != nullptr;
}

/// Hands the CUDA caching allocator's unused blocks back to the driver (after an out-of-memory
/// error, so that the next try starts from a clean pool); nothing on other devices.
inline void empty_device_cache(c10::Device device) {
#ifdef FRUGAL_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#else
  (void)device;
#endif
}

}  // namespace frugal::compat

// ---- variants in LibTorch's module options (c10::variant up to 2.0, std::variant from 2.1) ----
#if FRUGAL_TORCH_AT_LEAST(2, 1)
#include <variant>
#else
#include <c10/util/variant.h>
#endif

namespace frugal::compat {

/// The alternative T of an options variant (e.g. Conv2dOptions::padding()), or nullptr.
template <typename T, typename Variant>
const T* variant_get_if(const Variant& value) {
#if FRUGAL_TORCH_AT_LEAST(2, 1)
  return std::get_if<T>(&value);
#else
  return c10::get_if<T>(&value);
#endif
}

}  // namespace frugal::compat

// ---- optimizer state keys (appended for the 2.x build) ----
#include <ATen/core/Tensor.h>

#include <sstream>
#include <string>
#include <type_traits>

namespace frugal::compat {

/// The key of parameter `p` in torch::optim::Optimizer::state(), whose key type is `Key`: 1.13
/// keys the map by the TensorImpl's address printed as a string (c10::guts::to_string, gone in
/// 2.x), 2.x by the TensorImpl pointer itself. Call as
/// `optimizer_state_key<std::decay_t<decltype(opt.state())>::key_type>(p)`.
template <typename Key>
Key optimizer_state_key(const at::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream out;
    out << p.unsafeGetTensorImpl();
    return out.str();
  } else {
    return p.unsafeGetTensorImpl();
  }
}

}  // namespace frugal::compat
