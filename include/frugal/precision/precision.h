// The numeric precision of training, named as Lightning names it. The precision plugin
// (src/precision/plugin.h) is the only place that knows what each one does.
#pragma once

#include <c10/core/Device.h>

#include <string>

namespace frugal {

/// Numeric precision of training. Strings as Lightning: "32", "16-mixed", "bf16-mixed"; "auto"
/// is decided from the device once, when fit starts (choose_auto_precision below).
enum class Precision { k32, k16Mixed, kBf16Mixed, kAuto };
const char* to_string(Precision precision);
/// Parses "32", "32-true", "16-mixed", "bf16-mixed", "auto" (and "16", "bf16"); throws naming the
/// value.
Precision parse_precision(const std::string& text);

/// What precision "auto" is decided from.
struct PrecisionHardware {
  /// Training on a CUDA device (else the CPU).
  bool cuda = false;
  /// The device's name ("NVIDIA GeForce GTX 1080 Ti"; the CPU's model name), for the reason.
  std::string name;
  /// CUDA compute capability.
  int major = 0;
  int minor = 0;
  /// CPU features (cpuid, with the OS saving the registers): AVX512-BF16 and AMX-BF16.
  bool avx512_bf16 = false;
  bool amx_bf16 = false;
};

struct PrecisionChoice {
  Precision precision = Precision::k32;
  /// Why, in words (printed at fit start).
  std::string reason;
};

/// The rule of "auto" (docs/precision.md):
///   CUDA, compute capability >= 8.0: bf16-mixed (bf16 tensor cores, no loss scaling);
///   CUDA 7.x: 16-mixed with the GradScaler (fp16 tensor cores, no bf16);
///   CUDA 6.x and older: 32 (6.1 consumer cards run fp16 at 1/64 rate; no tensor cores at all);
///   CPU with AVX512-BF16 or AMX-BF16: bf16-mixed (native bf16 dot products); other CPUs: 32
///   (bf16 there is emulated and measured slower than fp32).
PrecisionChoice choose_auto_precision(const PrecisionHardware& hardware);
/// Reads `device`'s properties (CUDA) or the CPU's features (cpuid).
PrecisionHardware probe_precision_hardware(c10::Device device);
/// `requested` unless it is kAuto; then choose_auto_precision(probe_precision_hardware(device)).
PrecisionChoice resolve_precision(Precision requested, c10::Device device);

}  // namespace frugal
