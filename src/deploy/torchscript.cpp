// ScriptModule: a TorchScript module trained as a torch::nn::Module (frugal/deploy/torchscript.h).
#include "frugal/deploy/torchscript.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>
#include <sstream>

#include "frugal/error.h"
#include "frugal/io/checkpoint.h"

namespace frugal {

namespace {

// Registers the script module's own parameters and buffers in `node` (the same tensors, so
// whatever changes one changes the other) and mirrors each child as a ScriptNode.
void mirror(torch::nn::Module& node, const torch::jit::Module& script);

// One submodule of the script, seen as a torch::nn::Module: named after its TorchScript type,
// holding its parameters and buffers under their Python names.
class ScriptNode : public torch::nn::Module {
 public:
  explicit ScriptNode(const torch::jit::Module& script) : torch::nn::Module(script.type()->str()) {
    mirror(*this, script);
  }
};

void mirror(torch::nn::Module& node, const torch::jit::Module& script) {
  for (const auto& p : script.named_parameters(/*recurse=*/false))
    node.register_parameter(p.name, p.value, p.value.requires_grad());
  for (const auto& b : script.named_buffers(/*recurse=*/false))
    node.register_buffer(b.name, b.value);
  for (const auto& c : script.named_children())
    node.register_module(c.name, std::make_shared<ScriptNode>(c.value));
}

std::shared_ptr<torch::jit::Module> load_script(const std::string& path) {
  FRUGAL_CHECK(std::filesystem::is_regular_file(path), "ScriptModule: no TorchScript file '", path,
               "'");
  try {
    return std::make_shared<torch::jit::Module>(torch::jit::load(path, torch::kCPU));
  } catch (const c10::Error& e) {
    FRUGAL_CHECK(false, "ScriptModule: '", path,
                 "' is not a TorchScript file that this LibTorch can load (write it with "
                 "torch.jit.script(model).save(path)): ",
                 e.what_without_backtrace());
  }
  return nullptr;
}

}  // namespace

ScriptModuleImpl::ScriptModuleImpl(const std::string& path) : ScriptModuleImpl(load_script(path)) {}

ScriptModuleImpl::ScriptModuleImpl(std::shared_ptr<torch::jit::Module> module)
    : torch::nn::Module("frugal::ScriptModule"), script_(std::move(module)) {
  FRUGAL_CHECK(script_ != nullptr, "ScriptModule: no script module given");
  mirror(*this, *script_);
  torch::nn::Module::train(script_->is_training());
}

at::Tensor ScriptModuleImpl::forward(const at::Tensor& x) {
  c10::IValue out = script_->forward({x});
  FRUGAL_CHECK(out.isTensor(), "ScriptModule: the script's forward returned ", out.tagKind(),
               ", expected one tensor");
  return out.toTensor();
}

void ScriptModuleImpl::train(bool on) {
  torch::nn::Module::train(on);
  script_->train(on);
}

void ScriptModuleImpl::save_script(const std::string& path) const {
  std::ostringstream bytes;
  script_->save(bytes);
  const std::string data = bytes.str();
  detail::write_atomically(path, [&](const std::function<void(const void*, size_t)>& sink) {
    sink(data.data(), data.size());
  });
}

}  // namespace frugal
