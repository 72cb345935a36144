// The quantization engine of LibTorch's quantized CPU operators, shared by quantize.cpp and
// quantized_model.cpp (private).
#pragma once

#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <initializer_list>
#include <string>

namespace frugal::detail {

/// "onednn", "qnnpack", "x86", "fbgemm".
std::string engine_name(at::QEngine engine);

/// The named engine (checked: an unknown one is an error starting with `who` and listing the
/// build's engines), else the first the build supports of x86, fbgemm, onednn, qnnpack.
at::QEngine pick_engine(const std::string& wanted, const char* who);

/// Sets the global engine for the scope (prepacking and some kernels dispatch on it).
class EngineScope {
 public:
  explicit EngineScope(at::QEngine engine) : previous_(at::globalContext().qEngine()) {
    if (engine != previous_) at::globalContext().setQEngine(engine);
  }
  ~EngineScope() {
    if (at::globalContext().qEngine() != previous_) at::globalContext().setQEngine(previous_);
  }
  EngineScope(const EngineScope&) = delete;
  EngineScope& operator=(const EngineScope&) = delete;

 private:
  at::QEngine previous_;
};

/// A quantized operator by name, trying the overload names LibTorch versions register it under.
c10::OperatorHandle quantized_op(const char* name, std::initializer_list<const char*> overloads);

}  // namespace frugal::detail
