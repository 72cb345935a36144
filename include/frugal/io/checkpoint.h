// Checkpoints: the full training state in one file, written atomically, loaded with strict checks.
//
// A checkpoint holds the model's parameters and buffers, optimizer, LR scheduler and precision
// (GradScaler) state, the loop counters and data position, RNG states, every callback's state
// (by state key), the trainer options and the frugal version. Tensors are saved on CPU, so a GPU
// checkpoint loads on a CPU machine and the other way round. The file is a LibTorch
// serialization archive (readable by LibTorch 1.13 and 2.x) whose zip comment records the SHA-256
// of its contents: a file changed by a single byte is refused on load.
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

/// Loads only the model weights of a checkpoint (full or weights-only) into `module`. Checks the
/// file's checksum (unless `verify_checksum` is false: for huge files read from trusted storage)
/// and every parameter and buffer name and shape first; on any mismatch throws naming the file
/// or the parameter and both shapes, and leaves `module` untouched.
void load_weights(torch::nn::Module& module, const std::string& path, bool verify_checksum = true);

namespace detail {
/// Writes a file atomically: `write(sink)` streams bytes into a temporary file in the same folder,
/// which is then flushed, fsync'd and renamed over `path`, and the folder fsync'd. A crash at any
/// point leaves either the old file or the new one under `path`, never a truncated one.
void write_atomically(
    const std::string& path,
    const std::function<void(const std::function<void(const void*, size_t)>&)>& write);
/// Checks that a file can be created in `dir` — or, while it does not exist, in the nearest folder
/// above it — (a read-only file system, a missing permission, a file in the way); throws
/// frugal::Error naming `who` and the folder otherwise. With `create`, makes the folder first.
/// Run where a folder enters (fit start), not after hours of training.
void ensure_writable_dir(const std::string& dir, bool create, const std::string& who);
}  // namespace detail

}  // namespace frugal
