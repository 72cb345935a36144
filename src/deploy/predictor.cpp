#include "frugal/deploy/predictor.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>
#include <vector>

#include "frugal/data/image_loader.h"
#include "frugal/error.h"
#include "frugal/io/checkpoint.h"
#include "models/layout.h"
#include "precision/plugin.h"

namespace frugal {

double Predictions::accuracy() const {
  FRUGAL_CHECK(targets.defined() && top_indices.defined() && top_indices.size(0) > 0,
               "Predictions::accuracy: needs targets and at least one prediction");
  FRUGAL_CHECK(targets.numel() == top_indices.size(0), "Predictions::accuracy: ", targets.numel(),
               " targets for ", top_indices.size(0), " predictions");
  return top_indices.select(1, 0)
      .eq(targets.to(at::kLong).reshape({-1}))
      .to(at::kDouble)
      .mean()
      .item<double>();
}

struct Predictor::Impl {
  PredictorOptions options;
  std::function<at::Tensor(const at::Tensor&)> forward;
  std::unique_ptr<detail::PrecisionPlugin> precision;
  // Exactly one of these holds the model.
  std::shared_ptr<torch::nn::Module> module;
  std::shared_ptr<torch::jit::Module> script;
};

namespace {

void check_options(const PredictorOptions& options) {
  FRUGAL_CHECK(options.batch_size() >= 1, "Predictor: batch_size must be >= 1, got ",
               options.batch_size());
  FRUGAL_CHECK(!options.device().is_cuda() || torch::cuda::is_available(), "Predictor: device ",
               options.device(), " requested but CUDA is not available");
}

/// The tensors torch::save(module) wrote for `module` (one nested archive per child), paired with
/// the module's own tensors; throws on a missing name.
void collect_archive(torch::nn::Module& module, torch::serialize::InputArchive& archive,
                     std::vector<std::pair<at::Tensor, at::Tensor>>& updates) {
  for (const auto& p : module.named_parameters(/*recurse=*/false)) {
    at::Tensor t;
    archive.read(p.key(), t, /*is_buffer=*/false);
    updates.emplace_back(p.value(), t);
  }
  for (const auto& b : module.named_buffers(/*recurse=*/false)) {
    at::Tensor t;
    archive.read(b.key(), t, /*is_buffer=*/true);
    updates.emplace_back(b.value(), t);
  }
  for (const auto& child : module.named_children()) {
    torch::serialize::InputArchive child_archive;
    archive.read(child.key(), child_archive);
    collect_archive(*child.value(), child_archive, updates);
  }
}

}  // namespace

Predictor::Predictor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Predictor::~Predictor() = default;
Predictor::Predictor(Predictor&&) noexcept = default;
Predictor& Predictor::operator=(Predictor&&) noexcept = default;

Predictor::Predictor(std::shared_ptr<torch::nn::Module> module, Forward forward,
                     PredictorOptions options) {
  check_options(options);
  FRUGAL_CHECK(module != nullptr && forward, "Predictor: the module or its forward is empty");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->module = std::move(module);
  torch::nn::Module* m = impl->module.get();
  m->eval();
  m->to(options.device());
  if (options.channels_last()) {
    detail::set_memory_format(m->parameters(), at::MemoryFormat::ChannelsLast);
    detail::set_memory_format(m->buffers(), at::MemoryFormat::ChannelsLast);
  }
  impl->forward = std::move(forward);
  impl->precision = detail::make_precision(options.precision(), options.device());
  impl_ = std::move(impl);
}

Predictor Predictor::load(std::shared_ptr<torch::nn::Module> module, Forward forward,
                          const std::string& path, PredictorOptions options) {
  check_options(options);
  FRUGAL_CHECK(module != nullptr && forward, "Predictor::load: the module or its forward is empty");
  FRUGAL_CHECK(std::filesystem::is_regular_file(path), "Predictor::load: no file '", path, "'");
  std::shared_ptr<torch::nn::Module> m = module;
  std::string checkpoint_error;
  try {
    load_weights(*m, path, options.verify_checksum());
  } catch (const Error& e) {
    checkpoint_error = e.what();
  }
  if (!checkpoint_error.empty()) {
    // Not a frugal checkpoint: an archive of torch::save(module). Loaded into a copy of the
    // state first, so that a failure leaves the module untouched.
    try {
      torch::serialize::InputArchive archive;
      archive.load_from(path);
      torch::NoGradGuard no_grad;
      std::vector<std::pair<at::Tensor, at::Tensor>> updates;
      collect_archive(*m, archive, updates);
      for (const auto& [to, from] : updates) {
        FRUGAL_CHECK(to.sizes() == from.sizes(), "shape ", from.sizes(), " where the module has ",
                     to.sizes());
      }
      for (auto& [to, from] : updates) to.copy_(from);
    } catch (const std::exception& e) {
      FRUGAL_CHECK(false, "Predictor::load: '", path,
                   "' is neither a frugal checkpoint that fits the module (", checkpoint_error,
                   ") nor a torch::save archive of it (", e.what(), ")");
    }
  }
  return Predictor(std::move(module), std::move(forward), options);
}

Predictor Predictor::load_torchscript(const std::string& path, PredictorOptions options) {
  check_options(options);
  FRUGAL_CHECK(std::filesystem::is_regular_file(path), "Predictor::load_torchscript: no file '",
               path, "'");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  try {
    impl->script = std::make_shared<torch::jit::Module>(torch::jit::load(path, options.device()));
  } catch (const c10::Error& e) {
    FRUGAL_CHECK(false, "Predictor::load_torchscript: cannot load '", path,
                 "' as TorchScript: ", e.what_without_backtrace());
  }
  FRUGAL_CHECK(impl->script->find_method("forward").has_value(), "Predictor::load_torchscript: '",
               path, "' has no forward method");
  impl->script->eval();
  if (options.channels_last()) {
    std::vector<at::Tensor> tensors;
    for (const auto& p : impl->script->parameters()) tensors.push_back(p);
    for (const auto& b : impl->script->buffers()) tensors.push_back(b);
    detail::set_memory_format(tensors, at::MemoryFormat::ChannelsLast);
  }
  auto script = impl->script;
  impl->forward = [script](const at::Tensor& x) {
    c10::IValue out = script->forward({x});
    FRUGAL_CHECK(out.isTensor(), "Predictor: the TorchScript forward returned ", out.tagKind(),
                 ", expected one tensor");
    return out.toTensor();
  };
  impl->precision = detail::make_precision(options.precision(), options.device());
  return Predictor(std::move(impl));
}

const PredictorOptions& Predictor::options() const { return impl_->options; }

at::Tensor Predictor::run_batch(const at::Tensor& batch) {
  const auto& o = impl_->options;
  at::Tensor x = batch;
  if (x.device() != o.device()) {
    if (o.device().is_cuda() && x.device().is_cpu()) {
      x = x.pin_memory().to(o.device(), /*non_blocking=*/true);
    } else {
      x = x.to(o.device());
    }
  }
  if (o.channels_last() && x.dim() == 4) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor y;
  {
    auto scope = impl_->precision->forward_scope();
    y = impl_->forward(x);
  }
  return y.to(at::kCPU, at::kFloat);
}

at::Tensor Predictor::logits(const at::Tensor& inputs) {
  FRUGAL_CHECK(inputs.defined() && inputs.dim() >= 1 && inputs.size(0) >= 1,
               "Predictor: inputs must be a tensor with at least one sample (batch first)");
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> outputs;
  const int64_t n = inputs.size(0);
  for (int64_t begin = 0; begin < n; begin += impl_->options.batch_size()) {
    const int64_t end = std::min(n, begin + impl_->options.batch_size());
    outputs.push_back(run_batch(inputs.slice(0, begin, end)));
  }
  return at::cat(outputs, 0);
}

at::Tensor Predictor::probabilities(const at::Tensor& inputs) {
  at::Tensor out = logits(inputs);
  FRUGAL_CHECK(out.dim() == 2,
               "Predictor: probabilities need N x classes logits, the model "
               "returned ",
               out.sizes());
  return at::softmax(out, 1);
}

namespace {
Predictions make_predictions(at::Tensor probabilities, int64_t k) {
  FRUGAL_CHECK(k >= 1 && k <= probabilities.size(1), "Predictor: k must be in [1, ",
               probabilities.size(1), "] (the number of classes), got ", k);
  Predictions p;
  auto top = probabilities.topk(k, 1);
  p.top_probabilities = std::get<0>(top);
  p.top_indices = std::get<1>(top);
  p.probabilities = std::move(probabilities);
  return p;
}
}  // namespace

Predictions Predictor::predict(const at::Tensor& inputs, int64_t k) {
  return make_predictions(probabilities(inputs), k);
}

Predictions Predictor::predict(BatchSource& source, int64_t k) {
  return predict_batches(source, k, {}, /*keep_targets=*/true);
}

Predictions Predictor::predict_batches(BatchSource& source, int64_t k,
                                       const std::function<at::Tensor(const at::Tensor&)>& prepare,
                                       bool keep_targets) {
  torch::NoGradGuard no_grad;
  source.set_device(c10::Device(c10::kCPU));  // moved (pinned) by run_batch
  source.start_epoch(0, 0);
  std::vector<at::Tensor> outputs;
  std::vector<at::Tensor> targets;
  while (auto batch = source.next()) {
    outputs.push_back(run_batch(prepare ? prepare(batch->data) : batch->data));
    if (keep_targets && batch->target.defined()) targets.push_back(batch->target.to(at::kCPU));
  }
  FRUGAL_CHECK(!outputs.empty(), "Predictor::predict: ", source.describe(), " yielded no batches");
  at::Tensor out = at::cat(outputs, 0);
  FRUGAL_CHECK(out.dim() == 2,
               "Predictor: probabilities need N x classes logits, the model "
               "returned ",
               out.sizes());
  Predictions p = make_predictions(at::softmax(out, 1), k);
  if (keep_targets && targets.size() == outputs.size()) p.targets = at::cat(targets, 0);
  return p;
}

Predictions Predictor::predict_images(const std::vector<ImageSample>& images,
                                      const ImageInputOptions& input, int64_t k) {
  FRUGAL_CHECK(!images.empty(), "Predictor::predict_images: no images");
  FRUGAL_CHECK(input.height() >= 1 && input.width() >= 1,
               "Predictor::predict_images: height and width must be >= 1, got ", input.height(),
               "x", input.width());
  FRUGAL_CHECK(input.mean().size() == input.std().size(),
               "Predictor::predict_images: mean and std need the same number of values (one per "
               "channel), got ",
               input.mean().size(), " and ", input.std().size());
  const TransformPtr transform =
      input.transform() ? input.transform()
                        : compose({std::make_shared<Resize>(input.height() * 8 / 7),
                                   std::make_shared<CenterCrop>(input.height(), input.width())});
  const bool labelled =
      std::all_of(images.begin(), images.end(), [](const ImageSample& s) { return s.label >= 0; });
  std::vector<ImageSample> samples = images;
  if (!labelled) {
    for (ImageSample& s : samples) s.label = 0;
  }
  ImageLoader loader(std::move(samples), transform, input.height(), input.width(),
                     ImageLoaderOptions(impl_->options.batch_size())
                         .pad_shards(false)
                         .threads(input.threads())
                         .color(input.color()));
  const c10::Device device = impl_->options.device();
  const std::vector<double> mean = input.mean(), std = input.std();
  auto prepare = [&](const at::Tensor& batch) {
    // Normalized where the model runs (4x fewer bytes to move than float32).
    const at::Tensor x = batch.to(device);
    return mean.empty() ? x : normalize_batch(x, mean, std);
  };
  return predict_batches(loader, k, prepare, labelled);
}

Predictions Predictor::predict_images(const std::vector<std::string>& paths,
                                      const ImageInputOptions& input, int64_t k) {
  std::vector<ImageSample> samples;
  samples.reserve(paths.size());
  for (const std::string& p : paths) samples.push_back({p, -1});
  return predict_images(samples, input, k);
}

}  // namespace frugal
