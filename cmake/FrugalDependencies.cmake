# Everything frugal needs comes from Debian's archive or from the LibTorch build.
include(GNUInstallDirs)
find_package(Torch REQUIRED)
find_package(fmt REQUIRED)
find_package(ZLIB REQUIRED)
find_package(Threads REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)
find_package(nlohmann_json QUIET)
find_package(CLI11 QUIET)

# CUDA support is decided by the LibTorch we build against (the wheel has it, Debian's has not).
set(FRUGAL_HAS_CUDA OFF)
if(TARGET torch_cuda OR CUDA_FOUND)
  set(FRUGAL_HAS_CUDA ON)
endif()
message(STATUS "frugal: LibTorch ${Torch_VERSION}, CUDA support: ${FRUGAL_HAS_CUDA}")
