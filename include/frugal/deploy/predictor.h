// Batched inference with a trained model: eval mode, no gradients, the chosen precision
// (autocast as in training), channels_last, pinned non-blocking transfers to CUDA.
//
//   auto net = frugal::models::SmallCnn();
//   auto predictor = frugal::Predictor::load(net, "run/best.ckpt");
//   frugal::Predictions p = predictor.predict(*test_source, /*k=*/3);
//   // p.probabilities (N x classes), p.top_indices / p.top_probabilities (N x 3), p.targets
//
// A TorchScript file (Python's torch.jit.script(model).save(...), or frugal's) loads with
// Predictor::load_torchscript(path). Image files go in through predict_images (decoded by an
// ImageLoader with the evaluation transforms, normalized on the predictor's device):
//
//   frugal::ImageFolder folder("photos");   // or any list of paths
//   auto p = predictor.predict_images(folder.samples(), frugal::ImageInputOptions(224, 224)
//                                         .mean({0.485, 0.456, 0.406}).std({0.229, 0.224, 0.225}));
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "frugal/data/batch_source.h"
#include "frugal/data/image_folder.h"
#include "frugal/data/transforms.h"
#include "frugal/precision/precision.h"

namespace frugal {

struct PredictorOptions {
  /// Samples per forward pass.
  TORCH_ARG(int64_t, batch_size) = 256;
  /// Where the model runs; inputs are moved there (pinned, non-blocking from CPU to CUDA).
  TORCH_ARG(c10::Device, device) = c10::Device(c10::kCPU);
  /// "32" runs in float32; "bf16-mixed" / "16-mixed" run the forward under autocast, as in
  /// training (results are returned as float32).
  TORCH_ARG(Precision, precision) = Precision::k32;
  /// Convert 4-D weights and inputs to channels_last (faster convolutions on many devices).
  TORCH_ARG(bool, channels_last) = false;
  /// What a checkpoint's checksum check does on load (see frugal::load_weights).
  TORCH_ARG(bool, verify_checksum) = true;
};

/// How image files become the model's input (Predictor::predict_images).
struct ImageInputOptions {
  ImageInputOptions(int64_t height = 224, int64_t width = 224) : height_(height), width_(width) {}
  TORCH_ARG(int64_t, height);
  TORCH_ARG(int64_t, width);
  /// The evaluation transforms, which must give height x width images. Null: torchvision's
  /// evaluation convention, Resize(height * 8 / 7) + CenterCrop(height, width) (256 -> 224).
  TORCH_ARG(TransformPtr, transform) = nullptr;
  TORCH_ARG(ColorMode, color) = ColorMode::kRGB;
  /// Per channel, (x / 255 - mean) / std (normalize_batch, on the predictor's device). Empty: the
  /// uint8 batch goes to the model as it is (a model that normalizes itself, as
  /// examples/image_folder's does).
  TORCH_ARG(std::vector<double>, mean);
  TORCH_ARG(std::vector<double>, std);
  /// Decode threads (0: the number of CPUs less one, at least 1).
  TORCH_ARG(int64_t, threads) = 0;
};

/// What Predictor::predict returns, all on the CPU, one row per sample in the source's order.
struct Predictions {
  at::Tensor probabilities;      // N x classes, float32 (softmax of the logits)
  at::Tensor top_indices;        // N x k, int64, most probable first
  at::Tensor top_probabilities;  // N x k, float32
  at::Tensor targets;            // N (from the BatchSource), undefined for plain tensors
  /// Fraction of samples whose top-1 class equals the target (needs targets).
  double accuracy() const;
};

class Predictor {
 public:
  /// Runs the model: one input batch (on the predictor's device) in, one output tensor out.
  using Forward = std::function<at::Tensor(const at::Tensor&)>;

  /// A module whose weights are already set, and how to run it.
  Predictor(std::shared_ptr<torch::nn::Module> module, Forward forward,
            PredictorOptions options = {});
  /// Any module holder with forward(at::Tensor) -> at::Tensor (Sequential, SmallCnn(), ...).
  template <typename ModuleType>
  explicit Predictor(torch::nn::ModuleHolder<ModuleType> module, PredictorOptions options = {})
      : Predictor(module.ptr(), forward_of(module), std::move(options)) {}

  /// `module` with the weights of `path`: a frugal checkpoint (full or weights-only, checksum and
  /// every name and shape checked) or an archive written by torch::save(module, path). On any
  /// mismatch throws naming the file, and leaves `module` untouched.
  static Predictor load(std::shared_ptr<torch::nn::Module> module, Forward forward,
                        const std::string& path, PredictorOptions options = {});
  template <typename ModuleType>
  static Predictor load(torch::nn::ModuleHolder<ModuleType> module, const std::string& path,
                        PredictorOptions options = {}) {
    return load(module.ptr(), forward_of(module), path, std::move(options));
  }
  /// A TorchScript file (torch::jit::load); its forward takes one tensor and returns one tensor.
  static Predictor load_torchscript(const std::string& path, PredictorOptions options = {});

  ~Predictor();
  Predictor(Predictor&&) noexcept;
  Predictor& operator=(Predictor&&) noexcept;

  /// The model's raw outputs for `inputs` (N x ...), run in batches; float32 on the CPU.
  at::Tensor logits(const at::Tensor& inputs);
  /// softmax(logits) over dimension 1.
  at::Tensor probabilities(const at::Tensor& inputs);
  /// Probabilities and the k most probable classes of every sample.
  Predictions predict(const at::Tensor& inputs, int64_t k = 1);
  /// The same over one pass of `source` (epoch 0, from its first batch; its targets kept).
  Predictions predict(BatchSource& source, int64_t k = 1);
  /// The same for image files, in the order given, labels as targets (ImageFolder::samples()).
  /// A file that cannot be read is an error naming it.
  Predictions predict_images(const std::vector<ImageSample>& images, const ImageInputOptions& input,
                             int64_t k = 1);
  /// Unlabelled image files (no targets).
  Predictions predict_images(const std::vector<std::string>& paths, const ImageInputOptions& input,
                             int64_t k = 1);

  const PredictorOptions& options() const;

 private:
  template <typename ModuleType>
  static Forward forward_of(torch::nn::ModuleHolder<ModuleType> module) {
    auto ptr = module.ptr();
    return [ptr](const at::Tensor& x) -> at::Tensor { return ptr->forward(x); };
  }
  struct Impl;
  explicit Predictor(std::unique_ptr<Impl> impl);
  at::Tensor run_batch(const at::Tensor& batch);
  Predictions predict_batches(BatchSource& source, int64_t k,
                              const std::function<at::Tensor(const at::Tensor&)>& prepare,
                              bool keep_targets);
  std::unique_ptr<Impl> impl_;
};

}  // namespace frugal
