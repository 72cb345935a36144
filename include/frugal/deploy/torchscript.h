// Training a TorchScript module that Python wrote (torch.jit.script(model).save(path)) with
// frugal's Trainer, and saving it back for Python's torch.jit.load.
//
//   frugal::ScriptModule net("model.pt");             // torch.jit.script(model).save(...)
//   frugal::Classifier task(net, frugal::AdamW(1e-3));
//   trainer.fit(task, train, val);                     // checkpoints and resume as for C++ modules
//   net->save("trained.pt");                           // torch.jit.load("trained.pt") runs it
//
// ScriptModule is a torch::nn::Module whose parameters and buffers ARE the script module's (the
// same tensors, registered under the same dotted names as Python's state_dict(): "0.weight",
// "features.3.block.1.running_var"), so optimizers, checkpoints, load_weights, device moves and
// frugal's callbacks work on it unchanged, and BatchNorm statistics updated by the script's
// forward are what the checkpoint saves. train()/eval() switch the script module's `training`
// flags too. A parameter Python saved with requires_grad False stays frozen.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <string>

namespace torch::jit {
struct Module;
}

namespace frugal {

class ScriptModuleImpl : public torch::nn::Module {
 public:
  /// Loads a TorchScript file (on the CPU; move it with to()). Throws frugal::Error naming the
  /// file when it is missing or not a TorchScript archive.
  explicit ScriptModuleImpl(const std::string& path);
  /// Wraps a script module already loaded (its tensors are shared, not copied).
  explicit ScriptModuleImpl(std::shared_ptr<torch::jit::Module> module);

  /// The script module's forward on one tensor; its output must be one tensor.
  at::Tensor forward(const at::Tensor& x);
  /// Sets the training flag of this module, its children and every submodule of the script.
  void train(bool on = true) override;
  /// Writes the script module (with the current parameters and buffers) to `path`, atomically,
  /// in TorchScript's format: Python's torch.jit.load(path) runs it.
  void save_script(const std::string& path) const;
  /// The wrapped script module.
  torch::jit::Module& script() const { return *script_; }

 private:
  std::shared_ptr<torch::jit::Module> script_;
};
TORCH_MODULE(ScriptModule);

}  // namespace frugal
