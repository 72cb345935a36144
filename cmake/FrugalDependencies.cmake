# Everything frugal needs comes from Debian's archive or from the LibTorch build.
include(GNUInstallDirs)

# ---- LibTorch (cmake/FrugalFindTorch.cmake: the same steps run in the installed frugalConfig) ----
include(FrugalFindTorch)
find_package(Torch REQUIRED)
message(STATUS "frugal: LibTorch library ${TORCH_LIBRARY}")
# A LibTorch outside the system folders (the PyPI wheel) may export libstdc++ symbols of its own
# (CMakeLists.txt links libstdc++ first then).
set(FRUGAL_TORCH_EXPORTS_LIBSTDCXX OFF)
if(NOT TORCH_LIBRARY MATCHES "^/usr/lib")
  set(FRUGAL_TORCH_EXPORTS_LIBSTDCXX ON)
endif()
# {fmt}: a LibTorch that ships its own (the 2.x wheel: fmt 12 in torch/include/fmt, included by the
# c10d headers) comes first on the include path, ahead of Debian's fmt 9 in /usr/include, so every
# file compiles against its copy: use it header-only (linking Debian's libfmt.so.9 with fmt 12's
# headers leaves fmt::v12 symbols undefined). Debian's LibTorch (in /usr) ships none.
set(_frugal_torch_fmt "")
foreach(_frugal_dir IN LISTS TORCH_INCLUDE_DIRS)
  if(NOT _frugal_torch_fmt AND EXISTS "${_frugal_dir}/fmt/format-inl.h" AND
     NOT _frugal_dir IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
    set(_frugal_torch_fmt "${_frugal_dir}")
  endif()
endforeach()
if(_frugal_torch_fmt AND NOT TARGET fmt::fmt)
  add_library(fmt::fmt INTERFACE IMPORTED)
  set_target_properties(fmt::fmt PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${_frugal_torch_fmt}"
    INTERFACE_COMPILE_DEFINITIONS FMT_HEADER_ONLY=1)
  message(STATUS "frugal: {fmt} header-only from LibTorch's ${_frugal_torch_fmt}")
else()
  find_package(fmt QUIET)
endif()
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
# LMDB image databases (src/data/lmdb.cpp): Debian's liblmdb-dev; without it LmdbFile says so.
find_path(FRUGAL_LMDB_INCLUDE_DIR lmdb.h)
find_library(FRUGAL_LMDB_LIBRARY lmdb)
if(FRUGAL_LMDB_INCLUDE_DIR AND FRUGAL_LMDB_LIBRARY)
  set(FRUGAL_HAS_LMDB ON)
else()
  set(FRUGAL_HAS_LMDB OFF)
  message(STATUS "frugal: liblmdb not found (liblmdb-dev): LMDB databases are compiled out")
endif()
# WebP (libwebp-dev), optional: without it WebP files are refused as not supported.
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(WEBP QUIET libwebp)
endif()
if(FRUGAL_HAS_IMAGE_CODECS AND WEBP_FOUND)
  set(FRUGAL_HAS_WEBP ON)
else()
  set(FRUGAL_HAS_WEBP OFF)
  message(STATUS "frugal: libwebp not found (libwebp-dev): WebP decoding is compiled out")
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

if(NOT TARGET nlohmann_json::nlohmann_json)
  message(FATAL_ERROR "frugal needs nlohmann-json (safetensors headers): install "
                      "nlohmann-json3-dev, or run scripts/fetch-deps and bring .deps/ along")
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

# What this build is, in words, for scripts/test's closing line ("libtorch 2.11.0 cuda 13.0 nccl").
# Debian's libtorch-dev 1.13.1 reports 1.13.0 in its headers and TorchConfigVersion: name the
# package's upstream version when LibTorch comes from a Debian package.
set(_frugal_torch_version "${Torch_VERSION}")
find_program(_frugal_dpkg_query dpkg-query)
if(_frugal_dpkg_query AND TORCH_LIBRARY MATCHES "^/usr/lib/")
  execute_process(COMMAND ${_frugal_dpkg_query} -W "-f=\${Version}" libtorch-dev
                  OUTPUT_VARIABLE _frugal_deb_version ERROR_QUIET RESULT_VARIABLE _frugal_dpkg_rc)
  if(_frugal_dpkg_rc EQUAL 0 AND _frugal_deb_version MATCHES "^([0-9]+\\.[0-9]+\\.[0-9]+)")
    set(_frugal_torch_version "${CMAKE_MATCH_1}")
  endif()
endif()
set(FRUGAL_BUILD_LABEL "libtorch ${_frugal_torch_version}")
if(FRUGAL_HAS_CUDA)
  set(_frugal_cuda_version "${CUDAToolkit_VERSION_MAJOR}.${CUDAToolkit_VERSION_MINOR}")
  if(NOT CUDAToolkit_VERSION_MAJOR)
    set(_frugal_cuda_version "${CUDA_VERSION}")
  endif()
  string(APPEND FRUGAL_BUILD_LABEL " cuda ${_frugal_cuda_version}")
  if(FRUGAL_HAS_NCCL)
    string(APPEND FRUGAL_BUILD_LABEL " nccl")
  endif()
else()
  string(APPEND FRUGAL_BUILD_LABEL " cpu")
endif()
if(FRUGAL_TOP_LEVEL)
  file(WRITE "${CMAKE_BINARY_DIR}/frugal-build-label.txt" "${FRUGAL_BUILD_LABEL}\n")
endif()
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

# ONNX export (src/deploy/onnx_export.cpp) writes a ModelProto: C++ generated at build time by
# protoc (protobuf-compiler) from ONNX's onnx.proto (libonnx-dev), linked against protobuf's lite
# runtime (libprotobuf-dev; the .proto says optimize_for = LITE_RUNTIME). Without them
# frugal::export_onnx throws an error saying what is missing.
# PyPI's torch wheel carries protoc 3.13 and its headers (torch/bin, torch/include); the wheel's
# prefix is on CMAKE_PREFIX_PATH (cmake/FrugalFindTorch.cmake), so it is kept out of this search:
# the generated code must match the headers and libprotobuf-lite of the same protobuf (Debian's).
set(FRUGAL_HAS_ONNX OFF)
set(_frugal_prefix_path "${CMAKE_PREFIX_PATH}")
if(DEFINED _frugal_torch_prefix)
  list(REMOVE_ITEM CMAKE_PREFIX_PATH "${_frugal_torch_prefix}")
endif()
find_package(Protobuf QUIET)
set(CMAKE_PREFIX_PATH "${_frugal_prefix_path}")
find_path(FRUGAL_ONNX_PROTO_DIR onnx.proto PATH_SUFFIXES onnx
  HINTS $ENV{FRUGAL_ONNX_PROTO_DIR} /usr/include /usr/local/include)
if(Protobuf_FOUND AND Protobuf_PROTOC_EXECUTABLE AND TARGET protobuf::libprotobuf-lite
   AND FRUGAL_ONNX_PROTO_DIR)
  set(FRUGAL_HAS_ONNX ON)
endif()
message(STATUS "frugal: ONNX export: ${FRUGAL_HAS_ONNX} (protobuf ${Protobuf_VERSION}, "
               "onnx.proto in ${FRUGAL_ONNX_PROTO_DIR})")
