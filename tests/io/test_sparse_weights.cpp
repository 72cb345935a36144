// Sparse storage of pruned weights (frugal/io/sparse_weights.h): bit-exact round trips through
// read_safetensors / load_state_dict, the size the layout promises, Python (safetensors + numpy)
// reading the same tensors, and named errors for inconsistent files.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>

#include "frugal/callbacks/model_pruning.h"
#include "frugal/io/sparse_weights.h"
#include "frugal/io/weights.h"
#include "frugal/models/zoo.h"
#include "python_oracle.h"
#include "test_support.h"

namespace fs = std::filesystem;
using frugal::testing::error_message;

namespace {

/// Global L1 pruning of every convolution and Linear weight of `model` to `amount`.
void prune(torch::nn::Module& model, double amount) {
  std::vector<at::Tensor> params, masks;
  for (auto& p : frugal::default_prunable_parameters(model, {"weight"})) {
    if (p.second.dim() < 2) continue;
    params.push_back(p.second);
    masks.push_back(torch::ones_like(p.second));
  }
  frugal::l1_unstructured_prune_masks(params, masks, amount, /*global=*/true);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) params[i].mul_(masks[i]);
}

}  // namespace

TEST(SparseWeights, RoundTripIsBitExactAndOnlySparseTensorsAreMasked) {
  const std::string dir = frugal::testing::temp_dir("sparse_weights_round_trip");
  torch::manual_seed(0);
  frugal::TensorMap t;
  t["dense"] = torch::randn({7, 5});
  t["sparse"] = torch::randn({13, 11}) * (torch::rand({13, 11}) < 0.2);  // ~80 % zeros
  t["half"] = (torch::randn({3, 17}) * (torch::rand({3, 17}) < 0.1)).to(at::kHalf);
  t["odd"] = torch::zeros({9});  // 9 bits: the last mask byte is padded
  t["odd"][4] = -0.0f;           // negative zero is a zero
  t["odd"][8] = 3.0f;
  t["ints"] = torch::zeros({100}, at::kLong);  // not floating point: stays dense
  t["empty"] = torch::empty({0, 3});
  frugal::write_sparse_safetensors(t, dir + "/w.safetensors", 0.5, {{"format", "pt"}});
  // The raw file holds masks and values for the sparse ones.
  std::map<std::string, std::string> meta;
  auto raw = frugal::read_safetensors(dir + "/w.safetensors", &meta);
  EXPECT_EQ(meta.at("format"), "pt");
  for (const auto& name : {"sparse", "half", "odd"}) {
    EXPECT_TRUE(raw.count(name)) << name;  // read back dense
  }
  // Equal values, bit for bit except that a stored -0.0 reads back as 0.0 (a zero is a zero).
  for (const auto& [name, value] : t) {
    ASSERT_TRUE(raw.count(name)) << name;
    EXPECT_EQ(raw[name].scalar_type(), value.scalar_type()) << name;
    EXPECT_EQ(raw[name].sizes(), value.sizes()) << name;
    EXPECT_TRUE(at::equal(raw[name].ne(0), value.ne(0))) << name;
    EXPECT_TRUE(at::equal(raw[name], value)) << name;
  }
  EXPECT_NE(meta.at("__frugal_sparse__").find("\"sparse\""), std::string::npos);
  EXPECT_EQ(meta.at("__frugal_sparse__").find("\"dense\""), std::string::npos);
  EXPECT_EQ(meta.at("__frugal_sparse__").find("\"ints\""), std::string::npos);
}

TEST(SparseWeights, NinetyPercentPrunedResNetIsSmallAndLoadsBack) {
  const std::string dir = frugal::testing::temp_dir("sparse_weights_resnet");
  torch::manual_seed(1);
  auto model = frugal::models::resnet18(10);
  prune(*model, 0.9);
  frugal::save_safetensors(*model, dir + "/dense.safetensors");
  frugal::save_sparse_safetensors(*model, dir + "/sparse.safetensors");
  // The bound from the layout: for each masked tensor numel / 8 + 4 x non-zeros, the rest dense.
  int64_t bound = 0, dense = 0;
  for (const auto& [name, value] : frugal::module_state(*model)) {
    dense += value.nbytes();
    const int64_t n = value.numel(), nnz = value.ne(0).sum().item<int64_t>();
    const bool masked = value.is_floating_point() && n > 0 && (n - nnz) * 2 >= n &&
                        (n + 7) / 8 + nnz * value.element_size() < (int64_t)value.nbytes();
    bound += masked ? (n + 7) / 8 + nnz * value.element_size() : value.nbytes();
  }
  const auto dense_file = fs::file_size(dir + "/dense.safetensors");
  const auto sparse_file = fs::file_size(dir + "/sparse.safetensors");
  std::cout << "resnet18 at 90 % sparsity: dense " << dense_file << " bytes, sparse " << sparse_file
            << " bytes (" << static_cast<double>(sparse_file) / dense_file << "x), payload bound "
            << bound << "\n";
  EXPECT_LE(sparse_file, bound + 100000);  // + the JSON header
  EXPECT_LT(static_cast<double>(sparse_file), 0.6 * static_cast<double>(dense_file));
  auto fresh = frugal::models::resnet18(10);
  frugal::load_state_dict(*fresh, dir + "/sparse.safetensors");
  for (const auto& [name, value] : frugal::module_state(*model)) {
    EXPECT_TRUE(at::equal(frugal::module_state(*fresh).at(name), value)) << name;
  }
}

TEST(SparseWeights, PythonReadsTheSameTensorsWithSafetensorsAndNumpy) {
  const std::string venv = FRUGAL_VENV_PYTHON;
  if (std::system((venv + " -c 'import safetensors, numpy' >/dev/null 2>&1").c_str()) != 0) {
    GTEST_SKIP() << "the PyPI packages safetensors and numpy are not importable by " << venv
                 << " (scripts/python-requirements.txt)";
  }
  const std::string dir = frugal::testing::temp_dir("sparse_weights_python");
  torch::manual_seed(2);
  frugal::TensorMap t;
  t["a"] = torch::randn({37, 3, 3}) * (torch::rand({37, 3, 3}) < 0.05);
  t["b"] = torch::randn({5});
  frugal::write_sparse_safetensors(t, dir + "/w.safetensors");
  std::ofstream(dir + "/read.py") << R"(
import json, sys, numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file
d = sys.argv[1]
with safe_open(d + "/w.safetensors", framework="numpy") as f:
    sparse = json.loads(f.metadata()["__frugal_sparse__"])["tensors"]
    out = {}
    for k in f.keys():
        if k.endswith(".__mask") or k.endswith(".__values"):
            continue
        out[k] = f.get_tensor(k)
    for name, info in sparse.items():
        n = int(np.prod(info["shape"]))
        dense = np.zeros(n, dtype=np.float32)
        dense[np.unpackbits(f.get_tensor(name + ".__mask"), bitorder="little")[:n] == 1] = \
            f.get_tensor(name + ".__values")
        out[name] = dense.reshape(info["shape"])
save_file(out, d + "/dense.safetensors")
)";
  ASSERT_EQ(std::system((venv + " " + dir + "/read.py " + dir).c_str()), 0);
  auto back = frugal::read_safetensors(dir + "/dense.safetensors");
  ASSERT_EQ(back.size(), 2u);
  for (const auto& [name, value] : t) EXPECT_TRUE(at::equal(back.at(name), value)) << name;
}

TEST(SparseWeights, InconsistentFilesAreRefusedNamingTheTensor) {
  const std::string dir = frugal::testing::temp_dir("sparse_weights_errors");
  const std::string meta = R"({"version": 1, "tensors": {"w": {"shape": [4, 4], "dtype": "F32"}}})";
  auto write = [&](frugal::TensorMap m, const std::string& file) {
    frugal::write_safetensors(m, dir + "/" + file, {{"__frugal_sparse__", meta}});
    return error_message([&] { frugal::read_safetensors(dir + "/" + file); });
  };
  at::Tensor mask = torch::tensor({0x03, 0x00}, at::kByte);  // 2 non-zeros
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "sparse tensor 'w' lacks w.__values",
                      write({{"w.__mask", mask}}, "a.safetensors"));
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring, "the mask must be 2 U8 bytes for shape [4, 4]",
      write({{"w.__mask", torch::zeros({3}, at::kByte)}, {"w.__values", torch::ones({0})}},
            "b.safetensors"));
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring, "the mask marks 2 non-zeros, so the values must be 2",
      write({{"w.__mask", mask}, {"w.__values", torch::ones({3})}}, "c.safetensors"));
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring, "min_sparsity must be in [0, 1], got 2",
      error_message([&] { frugal::write_sparse_safetensors({}, dir + "/d.safetensors", 2.0); }));
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring, "ends in .__mask", error_message([&] {
        frugal::write_sparse_safetensors({{"x.__mask", torch::ones({2})}}, dir + "/e.safetensors");
      }));
  EXPECT_FALSE(fs::exists(dir + "/d.safetensors"));
}
