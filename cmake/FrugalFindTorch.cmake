# Prepares find_package(Torch) (included by FrugalDependencies.cmake and by the installed
# frugalConfig.cmake, before they call it); sets nothing when Debian's LibTorch is used.
#
# Two builds are supported (docs/builds.md): Debian's CPU-only LibTorch 1.13 in /usr (the default),
# and the LibTorch inside PyPI's torch 2.x CUDA wheel (scripts/setup-torch2: -DTorch_DIR or
# -DCMAKE_PREFIX_PATH pointing into the wheel). The wheel's TorchConfig calls
# find_package(Caffe2 PATHS ...), whose PATHS come after the system paths, so with Torch_DIR alone
# it would pick Debian's 1.13 Caffe2Config from /usr, and its find_library(TORCH_LIBRARY torch
# PATHS <prefix>/lib) Debian's /usr/lib/.../libtorch.so: put the wheel's prefix first in
# CMAKE_PREFIX_PATH (searched before the system paths) and Caffe2_DIR next to Torch_DIR.
if(Torch_DIR AND EXISTS "${Torch_DIR}/../Caffe2/Caffe2Config.cmake")
  get_filename_component(_frugal_torch_prefix "${Torch_DIR}/../../.." ABSOLUTE)
  list(PREPEND CMAKE_PREFIX_PATH "${_frugal_torch_prefix}")
  if(NOT Caffe2_DIR)
    get_filename_component(Caffe2_DIR "${Torch_DIR}/../Caffe2" ABSOLUTE)
    set(Caffe2_DIR "${Caffe2_DIR}" CACHE PATH "Caffe2Config.cmake next to the chosen TorchConfig")
  endif()
endif()
# A CUDA LibTorch's Caffe2Config runs enable_language(CUDA) (so this file must be included from the
# top-level directory) and find_package(CUDAToolkit): it needs nvcc even though frugal compiles no
# CUDA code. Use $CUDA_HOME or /usr/local/cuda when nothing else was said. Without a GPU, its
# architecture auto-detection falls back to targets that nvcc 13 rejects: default
# TORCH_CUDA_ARCH_LIST to the architectures the 2.11 wheel itself is built for (CUDA 13 knows
# nothing older than sm_75; Pascal/Volta owners need a CUDA 12.x LibTorch, docs/builds.md).
set(_frugal_cuda_home "$ENV{CUDA_HOME}")
if(NOT _frugal_cuda_home AND EXISTS /usr/local/cuda/bin/nvcc)
  set(_frugal_cuda_home /usr/local/cuda)
endif()
if(_frugal_cuda_home AND EXISTS "${_frugal_cuda_home}/bin/nvcc")
  if(NOT DEFINED ENV{CUDA_HOME})
    set(ENV{CUDA_HOME} "${_frugal_cuda_home}")
  endif()
  if(NOT CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_COMPILER "${_frugal_cuda_home}/bin/nvcc" CACHE FILEPATH "nvcc for TorchConfig")
  endif()
  if(NOT CUDAToolkit_ROOT)
    set(CUDAToolkit_ROOT "${_frugal_cuda_home}")
  endif()
endif()
set(FRUGAL_TORCH_CUDA_ARCH_LIST "7.5;8.0;8.6;9.0;10.0;12.0" CACHE STRING
    "TORCH_CUDA_ARCH_LIST for a CUDA LibTorch when the environment sets none")
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(ENV{TORCH_CUDA_ARCH_LIST} "${FRUGAL_TORCH_CUDA_ARCH_LIST}")
endif()
