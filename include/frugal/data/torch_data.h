// Adapter from LibTorch's own `torch::data` loaders to a frugal BatchSource.
//
// The loader is made anew for every epoch by a factory that receives the epoch, so its sampler
// can be reseeded: LibTorch's loader owns a moved copy of its sampler and offers no way to call
// `set_epoch` on it, so a loader reused across epochs repeats one order forever.
//
//   auto dataset = torch::data::datasets::TensorDataset(images).map(...);  // any dataset
//   auto train = frugal::from_torch_data(
//       [=](int64_t epoch) {
//         torch::data::samplers::DistributedRandomSampler sampler(size, world_size, rank);
//         sampler.set_epoch(epoch);
//         return torch::data::make_data_loader(
//             dataset.map(torch::data::transforms::Stack<>()), std::move(sampler),
//             torch::data::DataLoaderOptions(64));
//       },
//       /*num_batches=*/(size / world_size + 63) / 64, /*num_samples=*/size / world_size);
//   trainer.fit(task, train, val);
//
// The source shards nothing itself (its set_shard refuses world_size > 1): give the loader a
// distributed sampler. This header includes <torch/data.h>; include it only where it is used.
#pragma once

#include <frugal/data/batch_source.h>
#include <torch/data.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace frugal {

namespace detail {

inline Batch to_batch(torch::data::Example<at::Tensor, at::Tensor>&& example) {
  return Batch{std::move(example.data), std::move(example.target)};
}

/// A loader without the Stack transform yields vectors of examples: stack them.
inline Batch to_batch(std::vector<torch::data::Example<at::Tensor, at::Tensor>>&& examples) {
  std::vector<at::Tensor> data;
  std::vector<at::Tensor> targets;
  data.reserve(examples.size());
  targets.reserve(examples.size());
  for (auto& example : examples) {
    data.push_back(std::move(example.data));
    targets.push_back(std::move(example.target));
  }
  return Batch{at::stack(data), at::stack(targets)};
}

/// Data without targets (`TensorDataset`): the batch's target stays undefined.
inline Batch to_batch(torch::data::TensorExample&& example) {
  return Batch{std::move(example.data), at::Tensor()};
}

inline Batch to_batch(std::vector<torch::data::TensorExample>&& examples) {
  std::vector<at::Tensor> data;
  data.reserve(examples.size());
  for (auto& example : examples) data.push_back(std::move(example.data));
  return Batch{at::stack(data), at::Tensor()};
}

inline Batch to_batch(Batch&& batch) { return std::move(batch); }

}  // namespace detail

/// Wraps a `torch::data` loader factory as a BatchSource. `make_loader(epoch)` returns a
/// `std::unique_ptr` (or `std::shared_ptr`) to a loader, e.g. from `torch::data::make_data_loader`,
/// whose batches are `Example<>` (with `transforms::Stack<>`), `std::vector<Example<>>`,
/// `TensorExample` (no targets: `Batch::target` stays undefined) or `frugal::Batch`.
/// `num_batches` and `num_samples` are this rank's counts per epoch. Batches are moved to the
/// source's device.
template <typename MakeLoader>
std::shared_ptr<BatchSource> from_torch_data(MakeLoader make_loader, int64_t num_batches,
                                             int64_t num_samples,
                                             std::string name = "torch::data loader") {
  using LoaderPtr = std::decay_t<std::invoke_result_t<MakeLoader&, int64_t>>;
  using Loader = typename std::pointer_traits<LoaderPtr>::element_type;
  using TorchBatch = typename Loader::BatchType;

  // The loader and its iterator live as long as the epoch's producer function.
  struct EpochState {
    LoaderPtr loader;
    std::optional<torch::data::Iterator<TorchBatch>> it;
    bool done = false;
  };

  auto factory = [make_loader = std::move(make_loader)](
                     int64_t epoch) mutable -> std::function<std::optional<Batch>()> {
    auto state = std::make_shared<EpochState>();
    state->loader = make_loader(epoch);
    return [state]() -> std::optional<Batch> {
      if (state->done) return std::nullopt;
      if (!state->it) {
        state->it.emplace(state->loader->begin());
      } else {
        ++*state->it;
      }
      if (*state->it == state->loader->end()) {
        state->done = true;
        return std::nullopt;
      }
      return detail::to_batch(std::move(**state->it));
    };
  };
  return std::make_shared<FunctionSource>(std::move(factory), num_batches, num_samples,
                                          std::move(name));
}

}  // namespace frugal
