# Everything frugal needs comes from Debian's archive or from the LibTorch build.
include(GNUInstallDirs)
find_package(Torch REQUIRED)
find_package(fmt QUIET)
find_package(ZLIB REQUIRED)
find_package(Threads REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)
find_package(nlohmann_json QUIET)
find_package(CLI11 QUIET)
# Image decoding (src/data/image.cpp): Debian's libjpeg-turbo (libjpeg API) and libpng. Without
# them (a GPU machine with only the LibTorch wheel) the library builds and decode_image says so.
find_package(JPEG QUIET)
find_package(PNG QUIET)
if(TARGET JPEG::JPEG AND TARGET PNG::PNG)
  set(FRUGAL_HAS_IMAGE_CODECS ON)
else()
  set(FRUGAL_HAS_IMAGE_CODECS OFF)
  message(WARNING "frugal: libjpeg or libpng not found (libjpeg62-turbo-dev, libpng-dev): "
                  "image decoding is compiled out")
endif()

# GPU machines have the PyTorch wheel but no Debian packages: scripts/fetch-deps copies the
# header-only parts (and {fmt}, used header-only) into .deps/include, used when a package is missing.
set(FRUGAL_DEPS_INCLUDE_DIR "${CMAKE_CURRENT_LIST_DIR}/../.deps/include")
if(NOT TARGET fmt::fmt)
  if(NOT EXISTS "${FRUGAL_DEPS_INCLUDE_DIR}/fmt/format.h")
    message(FATAL_ERROR "frugal needs {fmt}: install libfmt-dev, or run scripts/fetch-deps on a "
                        "machine that has it and bring .deps/ along")
  endif()
  add_library(fmt::fmt INTERFACE IMPORTED)
  set_target_properties(fmt::fmt PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${FRUGAL_DEPS_INCLUDE_DIR}"
    INTERFACE_COMPILE_DEFINITIONS FMT_HEADER_ONLY=1)
  message(STATUS "frugal: {fmt} header-only from ${FRUGAL_DEPS_INCLUDE_DIR}")
endif()
if(NOT TARGET CLI11::CLI11 AND EXISTS "${FRUGAL_DEPS_INCLUDE_DIR}/CLI/CLI.hpp")
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  set_target_properties(CLI11::CLI11 PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${FRUGAL_DEPS_INCLUDE_DIR}")
endif()
if(NOT TARGET nlohmann_json::nlohmann_json AND
   EXISTS "${FRUGAL_DEPS_INCLUDE_DIR}/nlohmann/json.hpp")
  add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
  set_target_properties(nlohmann_json::nlohmann_json PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${FRUGAL_DEPS_INCLUDE_DIR}")
endif()

# CUDA support is decided by the LibTorch we build against (the wheel has it, Debian's has not).
set(FRUGAL_HAS_CUDA OFF)
if(TARGET torch_cuda OR CUDA_FOUND)
  set(FRUGAL_HAS_CUDA ON)
endif()
message(STATUS "frugal: LibTorch ${Torch_VERSION}, CUDA support: ${FRUGAL_HAS_CUDA}")

# Data-parallel backends (c10d). Gloo (CPU) when its headers are there: Debian's libgloo-dev, or
# the LibTorch wheel's own copy. The c10d headers guard the Gloo process group behind
# USE_C10D_GLOO, which TorchConfig does not set. NCCL only where LibTorch has CUDA and nccl.h is
# found (the wheel's nvidia-nccl package, the CUDA toolkit, or $NCCL_INCLUDE_DIR); without it the
# NCCL code is compiled out.
include(CheckIncludeFileCXX)
set(_frugal_saved_includes "${CMAKE_REQUIRED_INCLUDES}")
set(CMAKE_REQUIRED_INCLUDES ${TORCH_INCLUDE_DIRS})
check_include_file_cxx(gloo/algorithm.h FRUGAL_HAS_GLOO)
set(CMAKE_REQUIRED_INCLUDES "${_frugal_saved_includes}")
set(FRUGAL_HAS_NCCL OFF)
if(FRUGAL_HAS_CUDA)
  find_path(FRUGAL_NCCL_INCLUDE_DIR nccl.h
    HINTS $ENV{NCCL_INCLUDE_DIR} ${TORCH_INCLUDE_DIRS} ${CUDAToolkit_INCLUDE_DIRS} ${CUDA_INCLUDE_DIRS}
          "${Torch_DIR}/../../../../nvidia/nccl/include")
  if(FRUGAL_NCCL_INCLUDE_DIR)
    set(FRUGAL_HAS_NCCL ON)
  endif()
endif()
message(STATUS "frugal: c10d Gloo: ${FRUGAL_HAS_GLOO}, NCCL: ${FRUGAL_HAS_NCCL}")
# Only src/distributed/data_parallel.cpp includes the c10d headers, so the switches are set on that
# file alone (this module is included from the directory that defines the frugal target).
set(_frugal_ddp_source "${CMAKE_CURRENT_SOURCE_DIR}/src/distributed/data_parallel.cpp")
if(FRUGAL_HAS_GLOO)
  set_property(SOURCE "${_frugal_ddp_source}" APPEND PROPERTY COMPILE_DEFINITIONS USE_C10D_GLOO=1)
endif()
if(FRUGAL_HAS_NCCL)
  set_property(SOURCE "${_frugal_ddp_source}" APPEND PROPERTY COMPILE_DEFINITIONS USE_C10D_NCCL=1)
  set_property(SOURCE "${_frugal_ddp_source}" APPEND PROPERTY INCLUDE_DIRECTORIES
                                                              "${FRUGAL_NCCL_INCLUDE_DIR}")
endif()

# Through add_subdirectory, frugal::frugal is linked from the parent project, so the imported
# targets it uses (torch and what it links, fmt, ZLIB, ...) must be visible there too: make the
# ones found here global. (A parent that found them first already sees its own.)
if(NOT FRUGAL_TOP_LEVEL)
  if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.21)
    get_directory_property(_frugal_imported IMPORTED_TARGETS)
    foreach(_frugal_target IN LISTS _frugal_imported)
      get_target_property(_frugal_global ${_frugal_target} IMPORTED_GLOBAL)
      if(NOT _frugal_global)
        set_property(TARGET ${_frugal_target} PROPERTY IMPORTED_GLOBAL TRUE)
      endif()
    endforeach()
  else()
    message(WARNING "frugal through add_subdirectory needs CMake >= 3.21, or a parent project "
                    "that calls find_package(Torch), find_package(fmt), find_package(ZLIB), "
                    "find_package(Threads) and find_package(OpenSSL COMPONENTS Crypto) first")
  endif()
endif()
