// Activation checkpointing: trade compute for memory. A checkpointed segment keeps only its input
// in the forward pass and runs its forward again inside backward, with the RNG state (dropout
// masks) and autocast state of the original forward, so gradients are the same as without it.
//
//   torch::nn::Sequential net(...);                       // 16 conv blocks, say
//   auto y = frugal::checkpoint_sequential(net, 4, x);    // in a hand-written loop, or:
//   frugal::CheckpointedSequential ckpt(net, frugal::CheckpointedSequentialOptions(4));
//   frugal::Classifier task(ckpt, frugal::AdamW(1e-3));   // checkpointed only while training
//
// See docs/activation_checkpointing.md for what it costs and saves.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace frugal {

/// Runs `fn(input)` without keeping its intermediate activations: only `input` is saved, and
/// `fn` runs again in backward (the building block of checkpoint_sequential). `parameters` are
/// the tensors `fn` uses besides `input` that need gradients (a module's parameters()): their
/// gradients flow through the graph as for any op, so `loss.backward()`, `torch::autograd::grad`
/// and gradient hooks see them as usual. With `preserve_rng_state`, the default CPU generator
/// (and the CUDA one of `input`'s device) is set back to its forward-time state for the
/// recomputation, so random ops (dropout) draw the same numbers; the caller's RNG stream is left
/// as if the recomputation had not happened. Autocast is re-entered as it was in the forward.
///
/// Without grad mode, or when neither `input` nor any parameter requires grad, this is `fn(input)`.
/// `fn` must be a pure function of `input` and `parameters` (and the RNG), must not modify
/// `input` in place (refused with an error), and its backward cannot be differentiated again.
at::Tensor checkpoint(const std::function<at::Tensor(const at::Tensor&)>& fn,
                      const at::Tensor& input, const std::vector<at::Tensor>& parameters,
                      bool preserve_rng_state = true);

/// Splits `seq` into `segments` runs of size(seq) / segments modules (the last one takes the
/// remainder) and checkpoints every one but the last, which runs normally as its output is
/// needed for the loss anyway (torch.utils.checkpoint.checkpoint_sequential's rule). So
/// `segments = 1` checkpoints nothing and `segments = size(seq)` keeps one activation per
/// module. 1 <= segments <= size(seq), else a frugal::Error naming both.
at::Tensor checkpoint_sequential(torch::nn::Sequential& seq, int64_t segments,
                                 const at::Tensor& input, bool preserve_rng_state = true);

struct CheckpointedSequentialOptions {
  /* implicit */ CheckpointedSequentialOptions(int64_t segments) : segments_(segments) {}
  /// Number of segments (see checkpoint_sequential).
  TORCH_ARG(int64_t, segments);
  /// Restore the RNG state for the recomputation (needed for dropout; a few KB per segment).
  TORCH_ARG(bool, preserve_rng_state) = true;
};

/// A Sequential whose forward is checkpoint_sequential while training with grad mode on, and the
/// plain Sequential forward otherwise (eval mode or NoGradGuard: nothing to recompute). Its
/// parameters and state-dict keys are the wrapped Sequential's ("0.weight", ...), so checkpoints
/// load into either.
class CheckpointedSequentialImpl : public torch::nn::Module {
 public:
  CheckpointedSequentialImpl(torch::nn::Sequential sequential,
                             CheckpointedSequentialOptions options);
  at::Tensor forward(const at::Tensor& input);
  torch::nn::Sequential& sequential() { return sequential_; }
  const CheckpointedSequentialOptions& options() const { return options_; }

 private:
  torch::nn::Sequential sequential_;
  CheckpointedSequentialOptions options_;
};
TORCH_MODULE(CheckpointedSequential);

}  // namespace frugal
