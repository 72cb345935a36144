#include "test_support.h"

#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>

namespace frugal::testing {

std::string temp_dir(const std::string& name) {
  const char* root = std::getenv("FRUGAL_TEST_TMP");
  std::filesystem::path dir = std::filesystem::path(root ? root : "/tmp/frugal_tests") / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

ToyData make_toy_data(int64_t n, int64_t features, int64_t classes, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  at::Tensor centers = torch::randn({classes, features}, gen) * 3.0;
  at::Tensor y = torch::randint(classes, {n}, gen, torch::kLong);
  at::Tensor x = centers.index_select(0, y) + torch::randn({n, features}, gen);
  return {x, y};
}

std::string params_sha256(torch::nn::Module& module) { return frugal::params_sha256(module); }

TrainerOptions quiet_options(const std::string& dir) {
  return TrainerOptions()
      .enable_progress_bar(false)
      .logger(false)
      .accelerator("cpu")
      .num_sanity_val_steps(0)
      .default_root_dir(dir.empty() ? temp_dir("default") : dir);
}

}  // namespace frugal::testing
