// Caps the CUDA caching allocator of device 0, so that the GPU tests meet real out-of-memory
// errors at small sizes on any card (an H100 would otherwise hold everything).
#pragma once

#include <ATen/ATen.h>
#ifdef FRUGAL_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#endif

namespace frugal::testing {

/// While alive, allocations on cuda:0 beyond `bytes` (as the allocator counts them) fail with
/// c10::OutOfMemoryError. Without CUDA it does nothing (the tests skip before using it).
class CudaMemoryCap {
 public:
  explicit CudaMemoryCap(double bytes) {
#ifdef FRUGAL_WITH_CUDA
    size_t free_bytes = 0;
    size_t total_bytes = 0;
    // Initialises the allocator for device 0 (setMemoryFraction asserts that it was).
    (void)at::empty({1}, at::TensorOptions().device(at::kCUDA));
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess && total_bytes > 0) {
      c10::cuda::CUDACachingAllocator::emptyCache();
      c10::cuda::CUDACachingAllocator::setMemoryFraction(bytes / static_cast<double>(total_bytes),
                                                         0);
    }
#else
    (void)bytes;
#endif
  }
  ~CudaMemoryCap() {
#ifdef FRUGAL_WITH_CUDA
    c10::cuda::CUDACachingAllocator::setMemoryFraction(1.0, 0);
    c10::cuda::CUDACachingAllocator::emptyCache();
#endif
  }
  CudaMemoryCap(const CudaMemoryCap&) = delete;
  CudaMemoryCap& operator=(const CudaMemoryCap&) = delete;
};

}  // namespace frugal::testing
