// precision "auto": the choice (a pure function, tested over a table of devices) and the probes
// of the hardware it is made for.
#include <fstream>
#include <sstream>
#include <string>

#include "frugal/precision/precision.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#ifdef FRUGAL_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace frugal {

PrecisionChoice choose_auto_precision(const PrecisionHardware& hw) {
  std::ostringstream why;
  if (hw.cuda) {
    why << (hw.name.empty() ? std::string("CUDA device") : hw.name) << ", compute capability "
        << hw.major << "." << hw.minor << ": ";
    if (hw.major >= 8) {
      why << "native bf16 (>= 8.0), no loss scaling needed";
      return {Precision::kBf16Mixed, why.str()};
    }
    if (hw.major == 7) {
      why << "fp16 tensor cores without bf16 (7.x): fp16 with the GradScaler";
      return {Precision::k16Mixed, why.str()};
    }
    if (hw.major == 6 && hw.minor == 1) {
      why << "consumer Pascal runs fp16 at 1/64 of fp32's rate (6.1): fp32";
    } else {
      why << "no tensor cores (< 7.0): fp32";
    }
    return {Precision::k32, why.str()};
  }
  why << "CPU" << (hw.name.empty() ? std::string() : " " + hw.name) << ": ";
  if (hw.amx_bf16 || hw.avx512_bf16) {
    why << "native bf16 (" << (hw.amx_bf16 ? "AMX-BF16" : "AVX512-BF16") << ")";
    return {Precision::kBf16Mixed, why.str()};
  }
  why << "no AVX512-BF16 or AMX-BF16, so bf16 is emulated (slower than fp32): fp32";
  return {Precision::k32, why.str()};
}

namespace {

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon == std::string::npos) break;
    const auto start = line.find_first_not_of(' ', colon + 1);
    return start == std::string::npos ? std::string() : line.substr(start);
  }
  return "";
}

/// AVX512-BF16 (cpuid 7.1 EAX bit 5) and AMX-BF16 (cpuid 7.0 EDX bit 22), each only when the OS
/// saves the registers it needs (XCR0: AVX-512 state bits 5-7, AMX tile bits 17-18).
void probe_cpu_bf16(PrecisionHardware& hw) {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return;
  __cpuid(1, a, b, c, d);
  if ((c & (1u << 27)) == 0) return;  // no OSXSAVE: xgetbv is not available
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const unsigned long long xcr0 = (static_cast<unsigned long long>(xcr0_hi) << 32) | xcr0_lo;
  const bool avx512_state = (xcr0 & 0xE6) == 0xE6;  // SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
  const bool amx_state = (xcr0 & (3ull << 17)) == (3ull << 17);
  __cpuid_count(7, 0, a, b, c, d);
  const unsigned max_subleaf = a;
  hw.amx_bf16 = amx_state && (d & (1u << 22)) != 0;
  if (max_subleaf >= 1) {
    __cpuid_count(7, 1, a, b, c, d);
    hw.avx512_bf16 = avx512_state && (a & (1u << 5)) != 0;
  }
#else
  (void)hw;
#endif
}

}  // namespace

PrecisionHardware probe_precision_hardware(c10::Device device) {
  PrecisionHardware hw;
  if (device.is_cuda()) {
    hw.cuda = true;
#ifdef FRUGAL_WITH_CUDA
    const cudaDeviceProp* props =
        at::cuda::getDeviceProperties(device.has_index() ? device.index() : 0);
    hw.name = props->name;
    hw.major = props->major;
    hw.minor = props->minor;
#endif
    return hw;
  }
  hw.name = cpu_model_name();
  probe_cpu_bf16(hw);
  return hw;
}

PrecisionChoice resolve_precision(Precision requested, c10::Device device) {
  if (requested != Precision::kAuto) return {requested, "as set"};
  return choose_auto_precision(probe_precision_hardware(device));
}

}  // namespace frugal
