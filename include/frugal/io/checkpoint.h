// Checkpoints: the full training state in one file, written atomically, loaded with strict checks.
//
// A checkpoint holds the model's parameters and buffers, optimizer, LR scheduler and precision
// (GradScaler) state, the loop counters and data position, RNG states, every callback's state
// (by state key), the trainer options and the frugal version. Tensors are saved on CPU, so a GPU
// checkpoint loads on a CPU machine and the other way round. The file is a LibTorch
// serialization archive (readable by LibTorch 1.13 and 2.x).
//
//   trainer.save_checkpoint("run/last.ckpt");
//   trainer.fit(task, train, val, "run/last.ckpt");      // exact resume
//   frugal::load_weights(*net, "run/best.ckpt");         // inference: weights only
#pragma once

#include <functional>
#include <string>

namespace torch::nn {
class Module;
}

namespace frugal {

/// Loads only the model weights of a checkpoint (full or weights-only) into `module`. Checks every
/// parameter and buffer name and shape first; on any mismatch throws naming the parameter and
/// both shapes, and leaves `module` untouched.
void load_weights(torch::nn::Module& module, const std::string& path);

namespace detail {
/// Writes a file atomically: `write(sink)` streams bytes into a temporary file in the same folder,
/// which is then flushed, fsync'd and renamed over `path`, and the folder fsync'd. A crash at any
/// point leaves either the old file or the new one under `path`, never a truncated one.
void write_atomically(
    const std::string& path,
    const std::function<void(const std::function<void(const void*, size_t)>&)>& write);
}  // namespace detail

}  // namespace frugal
