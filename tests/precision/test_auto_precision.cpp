// precision "auto": the rule over a table of (device name, compute capability) and CPU features,
// without a GPU; and the Trainer resolving it once at fit start, recorded in the checkpoint.
#include <frugal/precision/precision.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "io/checkpoint_io.h"
#include "precision/plugin.h"
#include "test_support.h"

namespace {

using frugal::Precision;
using frugal::PrecisionHardware;
using ::testing::HasSubstr;

struct CudaRow {
  const char* name;
  int major;
  int minor;
  Precision expected;
  const char* reason_has;
};

TEST(AutoPrecision, CudaDeviceTable) {
  const std::vector<CudaRow> rows = {
      {"NVIDIA H200", 9, 0, Precision::kBf16Mixed, "native bf16"},
      {"NVIDIA H100 80GB HBM3", 9, 0, Precision::kBf16Mixed, "native bf16"},
      {"NVIDIA A100-SXM4-40GB", 8, 0, Precision::kBf16Mixed, "native bf16"},
      {"NVIDIA GeForce RTX 3090", 8, 6, Precision::kBf16Mixed, "native bf16"},
      {"NVIDIA GeForce RTX 4090", 8, 9, Precision::kBf16Mixed, "native bf16"},
      {"NVIDIA GeForce RTX 5090", 12, 0, Precision::kBf16Mixed, "native bf16"},
      {"Tesla V100-SXM2-16GB", 7, 0, Precision::k16Mixed, "GradScaler"},
      {"Tesla T4", 7, 5, Precision::k16Mixed, "GradScaler"},
      {"NVIDIA GeForce RTX 2080 Ti", 7, 5, Precision::k16Mixed, "GradScaler"},
      {"NVIDIA GeForce GTX 1660 SUPER", 7, 5, Precision::k16Mixed, "GradScaler"},
      {"NVIDIA GeForce GTX 1080 Ti", 6, 1, Precision::k32, "1/64"},
      {"NVIDIA GeForce GTX 1070", 6, 1, Precision::k32, "1/64"},
      {"Tesla P40", 6, 1, Precision::k32, "1/64"},
      {"Tesla P100-PCIE-16GB", 6, 0, Precision::k32, "no tensor cores"},
      {"Tesla K80", 3, 7, Precision::k32, "no tensor cores"},
  };
  for (const CudaRow& r : rows) {
    PrecisionHardware hw;
    hw.cuda = true;
    hw.name = r.name;
    hw.major = r.major;
    hw.minor = r.minor;
    hw.avx512_bf16 = true;  // the host CPU's features do not matter on CUDA
    const frugal::PrecisionChoice choice = frugal::choose_auto_precision(hw);
    EXPECT_EQ(choice.precision, r.expected) << r.name << ": " << choice.reason;
    EXPECT_THAT(choice.reason, HasSubstr(r.name));
    EXPECT_THAT(choice.reason, HasSubstr(std::to_string(r.major) + "." + std::to_string(r.minor)));
    EXPECT_THAT(choice.reason, HasSubstr(r.reason_has)) << r.name;
  }
}

TEST(AutoPrecision, CpuTable) {
  struct CpuRow {
    bool avx512_bf16;
    bool amx_bf16;
    Precision expected;
    const char* reason_has;
  };
  for (const CpuRow& r : std::vector<CpuRow>{{false, false, Precision::k32, "emulated"},
                                             {true, false, Precision::kBf16Mixed, "AVX512-BF16"},
                                             {false, true, Precision::kBf16Mixed, "AMX-BF16"},
                                             {true, true, Precision::kBf16Mixed, "AMX-BF16"}}) {
    PrecisionHardware hw;
    hw.name = "Some CPU";
    hw.avx512_bf16 = r.avx512_bf16;
    hw.amx_bf16 = r.amx_bf16;
    const frugal::PrecisionChoice choice = frugal::choose_auto_precision(hw);
    EXPECT_EQ(choice.precision, r.expected) << choice.reason;
    EXPECT_THAT(choice.reason, HasSubstr("CPU Some CPU"));
    EXPECT_THAT(choice.reason, HasSubstr(r.reason_has));
  }
}

TEST(AutoPrecision, ParsesAndNamesAuto) {
  EXPECT_EQ(frugal::parse_precision("auto"), Precision::kAuto);
  EXPECT_STREQ(frugal::to_string(Precision::kAuto), "auto");
  const auto cpu = c10::Device(c10::kCPU);
  EXPECT_EQ(frugal::resolve_precision(Precision::k32, cpu).precision, Precision::k32);
  EXPECT_EQ(frugal::resolve_precision(Precision::kBf16Mixed, cpu).precision, Precision::kBf16Mixed);
  // On this machine's CPU, "auto" is what the rule says for what cpuid reports.
  const PrecisionHardware hw = frugal::probe_precision_hardware(cpu);
  EXPECT_FALSE(hw.cuda);
  const auto resolved = frugal::resolve_precision(Precision::kAuto, cpu);
  EXPECT_EQ(resolved.precision, frugal::choose_auto_precision(hw).precision);
  EXPECT_NE(resolved.precision, Precision::kAuto);
  std::cout << "this CPU: " << resolved.reason << "\n";
  // The plugin made for "auto" is the resolved one.
  EXPECT_EQ(frugal::detail::make_precision(Precision::kAuto, cpu)->mode(), resolved.precision);
  if (torch::cuda::is_available()) {
    const auto gpu = frugal::resolve_precision(Precision::kAuto, c10::Device(c10::kCUDA, 0));
    std::cout << "this GPU: " << gpu.reason << "\n";
    EXPECT_NE(gpu.precision, Precision::kAuto);
  }
}

TEST(AutoPrecision, TrainerResolvesOnceAndTheCheckpointRecordsIt) {
  const std::string dir = frugal::testing::temp_dir("auto_precision");
  auto data = frugal::testing::make_toy_data(64, 8, 3, 1);
  torch::manual_seed(0);
  torch::nn::Sequential net(torch::nn::Linear(8, 3));
  frugal::Classifier task(net, frugal::AdamW(1e-2));
  frugal::Trainer trainer(frugal::testing::quiet_options(dir).max_epochs(1).precision("auto"));
  testing::internal::CaptureStdout();
  trainer.fit(task, std::make_shared<frugal::TensorLoader>(data.x, data.y,
                                                           frugal::TensorLoaderOptions(16)));
  const std::string out = testing::internal::GetCapturedStdout();
  const auto expected = frugal::resolve_precision(Precision::kAuto, c10::Device(c10::kCPU));
  EXPECT_THAT(out, HasSubstr(std::string("frugal: precision auto -> ") +
                             frugal::to_string(expected.precision) + " (" + expected.reason));
  const std::string path = dir + "/auto.ckpt";
  trainer.save_checkpoint(path);
  const frugal::detail::LoadedCheckpoint ckpt =
      frugal::detail::open_checkpoint(path, c10::Device(c10::kCPU));
  ASSERT_EQ(ckpt.state.count("precision/resolved"), 1u);
  EXPECT_EQ(ckpt.state.at("precision/resolved").toStringRef(),
            frugal::to_string(expected.precision));
}

}  // namespace
