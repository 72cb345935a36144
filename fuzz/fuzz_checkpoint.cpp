// frugal checkpoints through the loader: the checksum check (verify_checksum), then the archive
// opened unverified (open_checkpoint with verify = false, as for a file written before checksums:
// a mutated file would otherwise almost always stop at the checksum), the trainer state
// unpickled, and the weights planned and copied into the model the seeds were saved from
// (fuzz/tiny_model.h). Trainer::restore's use of the trainer state is not reached.
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>

#include "frugal/io/checkpoint.h"
#include "fuzz_support.h"
#include "io/checkpoint_io.h"
#include "io/checksum.h"
#include "tiny_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static torch::nn::Sequential model = frugal::fuzz::tiny_model();
  const std::string& path = frugal::fuzz::input_file("input.ckpt").write(data, size);
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY(frugal::detail::verify_checksum(path));
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY({
    frugal::detail::LoadedCheckpoint ckpt =
        frugal::detail::open_checkpoint(path, c10::Device(c10::kCPU), /*verify=*/false);
    frugal::detail::apply_weights(frugal::detail::plan_weights(*model, ckpt));
  });
  return 0;
}
