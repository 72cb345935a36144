// frugal checkpoints through the loader as frugal opens them: the checksum first
// (verify_checksum), then what it lets through opened, its trainer state unpickled, and its
// weights planned and copied into the model the seeds were saved from (fuzz/tiny_model.h).
// A file without a checksum (written before frugal had one) would go on to LibTorch's TorchScript
// importer, whose parser crashes on some damaged archives (a SIGSEGV in ScriptTypeParser, found
// here; docs/reliability.md). frugal cannot check TorchScript code, so the harness stops there;
// the pickles frugal does check before LibTorch reads them have their own harness
// (fuzz_pickle_scan).
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
  FRUGAL_FUZZ_EXPECT_ERROR_ONLY({
    if (frugal::detail::verify_checksum(path) == frugal::detail::ChecksumStatus::kAbsent) return 0;
    frugal::detail::LoadedCheckpoint ckpt =
        frugal::detail::open_checkpoint(path, c10::Device(c10::kCPU), /*verify=*/false);
    frugal::detail::apply_weights(frugal::detail::plan_weights(*model, ckpt));
  });
  return 0;
}
