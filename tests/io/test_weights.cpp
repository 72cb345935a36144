// Weights in Python's formats: safetensors read/write (bitwise round trips, every malformed file
// refused with its reason, readable by Python), torch.save(state_dict) files written by Python's
// torch (bitwise), legacy and whole-model files refused, strict / non-strict load_state_dict.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "disk_full.h"
#include "frugal/io/weights.h"
#include "frugal/models/zoo.h"
#include "test_support.h"

namespace {

using frugal::TensorMap;
using frugal::testing::error_message;
using ::testing::HasSubstr;

std::string python() {
  const char* env = std::getenv("FRUGAL_PYTHON");
  return env ? env : "/usr/bin/python3";
}

bool python_has(const std::string& py, const std::string& module) {
  return std::system(
             (frugal::testing::shell_quote(py) + " -c 'import " + module + "' > /dev/null 2>&1")
                 .c_str()) == 0;
}

// Runs a Python script (text) in `dir`; returns "" or the failure.
std::string run_python(const std::string& py, const std::string& dir, const std::string& name,
                       const std::string& script, const std::string& args = "") {
  std::ofstream(dir + "/" + name + ".py") << script;
  auto run = frugal::testing::run_program(
      py, frugal::testing::shell_quote(dir + "/" + name + ".py") + " " + args, dir, name);
  return run.exit_code == 0 ? "" : run.describe();
}

TensorMap sample_tensors() {
  torch::manual_seed(1);
  TensorMap t;
  t["a.f32"] = torch::randn({3, 4});
  t["b.f64"] = torch::randn({5}, torch::kDouble);
  t["c.f16"] = torch::randn({2, 3}).to(torch::kHalf);
  t["d.bf16"] = torch::randn({7}).to(torch::kBFloat16);
  t["e.i64"] = torch::arange(-5, 5, torch::kLong);
  t["f.i32"] = torch::arange(0, 6, torch::kInt).view({2, 3});
  t["g.u8"] = torch::arange(0, 255, torch::kByte);
  t["h.bool"] = torch::tensor({true, false, true});
  t["i.scalar"] = torch::tensor(3.5f);
  t["j.empty"] = torch::empty({0, 4});
  t["k.i8"] = torch::arange(-3, 3, torch::kChar);
  t["l.i16"] = torch::arange(-3, 3, torch::kShort);
  t["m.noncontig"] = torch::randn({4, 3}).t();
  return t;
}

void expect_bitwise(const TensorMap& got, const TensorMap& want) {
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [k, t] : want) {
    ASSERT_TRUE(got.count(k)) << k;
    EXPECT_EQ(got.at(k).scalar_type(), t.scalar_type()) << k;
    EXPECT_EQ(got.at(k).sizes(), t.sizes()) << k;
    EXPECT_TRUE(torch::equal(got.at(k), t)) << k;
  }
}

TEST(Safetensors, RoundTripBitwiseWithMetadataAndPythonLayout) {
  const auto dir = frugal::testing::temp_dir("st_roundtrip");
  const auto t = sample_tensors();
  frugal::write_safetensors(t, dir + "/x.safetensors", {{"format", "pt"}, {"who", "frugal"}});
  std::map<std::string, std::string> meta;
  expect_bitwise(frugal::read_safetensors(dir + "/x.safetensors", &meta), t);
  EXPECT_EQ(meta, (std::map<std::string, std::string>{{"format", "pt"}, {"who", "frugal"}}));
  // Layout: header padded to 8 bytes; data ordered by dtype size (descending), then name.
  std::ifstream in(dir + "/x.safetensors", std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u);
  std::string header(n, '\0');
  in.read(header.data(), static_cast<std::streamsize>(n));
  EXPECT_LT(header.find("\"b.f64\""), header.find("\"e.i64\""));
  EXPECT_LT(header.find("\"e.i64\""), header.find("\"a.f32\""));
  EXPECT_LT(header.find("\"a.f32\""), header.find("\"c.f16\""));
  EXPECT_LT(header.find("\"c.f16\""), header.find("\"g.u8\""));
}

TEST(Safetensors, ModuleRoundTripBitwise) {
  const auto dir = frugal::testing::temp_dir("st_module");
  auto a = frugal::models::mobilenet_v3_small(10, 1);
  a->train();
  {
    torch::NoGradGuard g;
    a->forward(torch::randn({4, 1, 32, 32}));  // running statistics move
  }
  frugal::save_safetensors(*a, dir + "/m.safetensors");
  auto b = frugal::models::mobilenet_v3_small(10, 1);
  const auto r = frugal::load_state_dict(*b, dir + "/m.safetensors");
  EXPECT_TRUE(r.missing_keys.empty() && r.unexpected_keys.empty() && r.mismatched_keys.empty());
  EXPECT_EQ(r.loaded_keys.size(), frugal::module_state(*a).size());
  expect_bitwise(frugal::module_state(*b), frugal::module_state(*a));
}

// A file from raw pieces: the 8-byte length, the header, the data.
void write_raw(const std::string& path, const std::string& header, const std::string& data,
               int64_t len = -1) {
  std::ofstream f(path, std::ios::binary);
  uint64_t n = len < 0 ? header.size() : static_cast<uint64_t>(len);
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << header << data;
}

TEST(Safetensors, EveryMalformedFileIsRefusedWithItsReason) {
  const auto dir = frugal::testing::temp_dir("st_bad");
  const std::string p = dir + "/bad.safetensors";
  auto err = [&] { return error_message([&] { frugal::read_safetensors(p); }); };
  std::ofstream(p, std::ios::binary) << "abc";
  EXPECT_THAT(err(), HasSubstr("too short for the 8-byte header length"));
  write_raw(p, "{}", "", 100'000'001);
  EXPECT_THAT(err(), HasSubstr("header length 100000001 exceeds the limit of 100000000 bytes"));
  write_raw(p, "{}", "", 50);
  EXPECT_THAT(err(), HasSubstr("runs past the end of the file"));
  write_raw(p, "{\"a\": ", "");
  EXPECT_THAT(err(), HasSubstr("header is not valid JSON"));
  write_raw(p, R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", "xx");
  EXPECT_THAT(err(), HasSubstr("entry 'a' has unknown or unsupported dtype 'F8_E4M3'"));
  write_raw(p, R"({"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,2]}})", "xx");
  EXPECT_THAT(err(), HasSubstr("unknown or unsupported dtype 'Q7'"));
  write_raw(p,
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            std::string(12, 'x'));
  EXPECT_THAT(err(), HasSubstr("(overlapping offsets)"));
  write_raw(p,
            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
            std::string(12, 'x'));
  EXPECT_THAT(err(), HasSubstr("(gap between entries)"));
  write_raw(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(8, 'x'));
  EXPECT_THAT(err(), HasSubstr("entries cover 4 bytes but the data buffer holds 8"));
  write_raw(p, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, 'x'));
  EXPECT_THAT(err(), HasSubstr("entry 'a': 8 bytes for shape [3] of F32 (expected 12)"));
  write_raw(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,40]}})", std::string(4, 'x'));
  EXPECT_THAT(err(), HasSubstr("data_offsets [0, 40] outside the data buffer of 4 bytes"));
  write_raw(p, R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, 'x'));
  EXPECT_THAT(err(), HasSubstr("shape holds a non-negative-integer value"));
  write_raw(p, R"({"a":{"dtype":"F32","shape":[1]}})", std::string(4, 'x'));
  EXPECT_THAT(err(), HasSubstr("entry 'a' needs dtype, shape and data_offsets"));
  write_raw(p, R"({"__metadata__":{"k":3}})", "");
  EXPECT_THAT(err(), HasSubstr("__metadata__ value of 'k' is not a string"));
  write_raw(p, "[1,2]", "");
  EXPECT_THAT(err(), HasSubstr("header is not a JSON object"));
  EXPECT_THAT(error_message([&] { frugal::read_safetensors(dir + "/missing.safetensors"); }),
              HasSubstr("cannot open"));
}

TEST(LoadStateDict, StrictListsEveryProblemAndLeavesTheModuleUntouched) {
  auto m = frugal::models::resnet18(10, 1);
  auto state = frugal::module_state(*m);
  const auto before = frugal::testing::params_sha256(*m);
  TensorMap file;
  for (const auto& [k, t] : state) file[k] = torch::zeros_like(t);
  file.erase("fc.bias");
  file.erase("layer1.0.bn1.running_var");
  file["extra.weight"] = torch::zeros({2});
  file["fc.weight"] = torch::zeros({7, 512});
  const auto msg = error_message([&] { frugal::load_state_dict(*m, file); });
  EXPECT_THAT(msg, HasSubstr("the module was left unchanged"));
  EXPECT_THAT(msg, HasSubstr("missing keys (2): fc.bias, layer1.0.bn1.running_var"));
  EXPECT_THAT(msg, HasSubstr("unexpected keys (1): extra.weight"));
  EXPECT_THAT(msg, HasSubstr("mismatched (1): fc.weight: file [7, 512] vs module [10, 512]"));
  EXPECT_EQ(frugal::testing::params_sha256(*m), before);

  frugal::LoadStateDictOptions loose;
  loose.strict = false;
  const auto r = frugal::load_state_dict(*m, file, loose);
  EXPECT_EQ(r.missing_keys, (std::vector<std::string>{"fc.bias", "layer1.0.bn1.running_var"}));
  EXPECT_EQ(r.unexpected_keys, (std::vector<std::string>{"extra.weight"}));
  ASSERT_EQ(r.mismatched_keys.size(), 1u);
  EXPECT_EQ(r.loaded_keys.size(), state.size() - 3);
  EXPECT_EQ(m->conv1->weight.abs().sum().item<double>(), 0.0);  // loaded
  EXPECT_GT(m->fc->weight.abs().sum().item<double>(), 0.0);     // left alone
}

TEST(LoadStateDict, HalfAndBFloat16FilesLoadIntoFloatModulesUnlessRefused) {
  auto m = frugal::models::mobilenet_v3_small(4, 1);
  TensorMap half;
  for (const auto& [k, t] : frugal::module_state(*m))
    half[k] = t.is_floating_point() ? (t + 0.5).to(torch::kHalf) : t.clone();
  half["classifier.3.bias"] = half["classifier.3.bias"].to(torch::kBFloat16);
  frugal::load_state_dict(*m, half);
  for (const auto& [k, t] : frugal::module_state(*m)) {
    EXPECT_EQ(t.scalar_type(), k == "features.0.1.num_batches_tracked" ||
                                       k.find("num_batches_tracked") != std::string::npos
                                   ? torch::kLong
                                   : torch::kFloat)
        << k;
    EXPECT_TRUE(torch::equal(t, half.at(k).to(t.scalar_type()))) << k;
  }
  frugal::LoadStateDictOptions exact;
  exact.allow_dtype_conversion = false;
  EXPECT_THAT(error_message([&] { frugal::load_state_dict(*m, half, exact); }),
              HasSubstr("classifier.3.bias: file dtype BFloat16 vs module dtype Float"));
}

// Python writes: sd.pt (torch.save of an OrderedDict state dict with fp16/bf16/int/bool tensors,
// a transposed view, two views sharing a storage, a 0-dim tensor), legacy.pt (pre-1.6 format),
// model.pt (a pickled whole module), dict.pt (a plain dict), ref_<name>.bin raw bytes.
const char* const kTorchSave = R"PY(
import collections, sys, torch
out = sys.argv[1]
torch.manual_seed(0)
base = torch.randn(6, 4)
sd = collections.OrderedDict()
sd["w"] = torch.randn(3, 5)
sd["t"] = base.t()                 # non-contiguous view
sd["v1"] = base[1:3]               # views sharing base's storage, with an offset
sd["v2"] = base[4]
sd["h"] = torch.randn(4).half()
sd["bf"] = torch.randn(4).bfloat16()
sd["i"] = torch.arange(-3, 3)
sd["b"] = torch.tensor([True, False])
sd["s"] = torch.tensor(2.5)
sd["d"] = torch.randn(2, dtype=torch.float64)
sd["e"] = torch.empty(0, 3)
sd._metadata = collections.OrderedDict([("", {"version": 1})])
torch.save(sd, f"{out}/sd.pt")
torch.save(dict(sd), f"{out}/dict.pt")
torch.save(sd, f"{out}/legacy.pt", _use_new_zipfile_serialization=False)
torch.save(torch.nn.Linear(2, 3), f"{out}/model.pt")
torch.save([torch.zeros(2)], f"{out}/list.pt")
for k, v in sd.items():
    with open(f"{out}/ref_{k}.bin", "wb") as f:
        f.write(v.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
with open(f"{out}/ref_shapes.txt", "w") as f:
    for k, v in sd.items():
        f.write(k + " " + str(v.dtype) + " " + " ".join(map(str, v.shape)) + "\n")
)PY";

TEST(TorchSave, PythonStateDictsReadBitwiseAndOtherFilesAreRefused) {
  if (!python_has(python(), "torch")) GTEST_SKIP() << python() << " cannot import torch";
  const auto dir = frugal::testing::temp_dir("torch_save");
  ASSERT_EQ(run_python(python(), dir, "make", kTorchSave, frugal::testing::shell_quote(dir)), "");
  const auto sd = frugal::read_torch_state_dict(dir + "/sd.pt");
  std::ifstream shapes(dir + "/ref_shapes.txt");
  std::string line;
  size_t n = 0;
  while (std::getline(shapes, line)) {
    std::istringstream ls(line);
    std::string key, dtype;
    ls >> key >> dtype;
    std::vector<int64_t> shape;
    for (int64_t d; ls >> d;) shape.push_back(d);
    ASSERT_TRUE(sd.count(key)) << key;
    const auto& t = sd.at(key);
    EXPECT_EQ(t.sizes().vec(), shape) << key;
    EXPECT_EQ("torch." + std::string(t.scalar_type() == torch::kFloat      ? "float32"
                                     : t.scalar_type() == torch::kDouble   ? "float64"
                                     : t.scalar_type() == torch::kHalf     ? "float16"
                                     : t.scalar_type() == torch::kBFloat16 ? "bfloat16"
                                     : t.scalar_type() == torch::kLong     ? "int64"
                                     : t.scalar_type() == torch::kBool     ? "bool"
                                                                           : "?"),
              dtype)
        << key;
    const std::string raw = frugal::testing::read_text(dir + "/ref_" + key + ".bin");
    const auto c = t.contiguous();
    ASSERT_EQ(raw.size(), static_cast<size_t>(c.numel()) * c.element_size()) << key;
    // (an empty tensor has no data pointer: memcmp with null is undefined, UBSan says)
    if (!raw.empty()) EXPECT_EQ(std::memcmp(raw.data(), c.data_ptr(), raw.size()), 0) << key;
    ++n;
  }
  EXPECT_EQ(n, 11u);
  EXPECT_EQ(sd.size(), n);
  expect_bitwise(frugal::read_torch_state_dict(dir + "/dict.pt"), sd);

  EXPECT_THAT(error_message([&] { frugal::read_torch_state_dict(dir + "/legacy.pt"); }),
              HasSubstr("is a legacy (pre-1.6, _use_new_zipfile_serialization=False) torch.save "
                        "file, which frugal does not read; re-save it in Python with "
                        "torch.save(model.state_dict(), path)"));
  EXPECT_THAT(error_message([&] { frugal::read_torch_state_dict(dir + "/model.pt"); }),
              HasSubstr("refers to torch.nn.modules.linear.Linear: it is not a state dict of "
                        "tensors (a pickled whole model or another object?); re-save it"));
  EXPECT_THAT(error_message([&] { frugal::read_torch_state_dict(dir + "/list.pt"); }),
              HasSubstr("not a dict of tensors"));
  // A truncated archive and a file of another kind.
  const std::string whole = frugal::testing::read_text(dir + "/sd.pt");
  std::ofstream(dir + "/cut.pt", std::ios::binary) << whole.substr(0, whole.size() / 2);
  EXPECT_THAT(error_message([&] { frugal::read_torch_state_dict(dir + "/cut.pt"); }),
              HasSubstr("is not a readable torch.save zip archive"));
  std::ofstream(dir + "/text.pt") << "hello world";
  EXPECT_THAT(
      error_message([&] { frugal::load_state_dict(*torch::nn::Linear(2, 3), dir + "/text.pt"); }),
      HasSubstr("is neither a torch.save zip file nor safetensors"));
}

// Python reads the C++ file two ways: a tiny pure-Python reader with torch (Debian's), and the
// `safetensors` package (PyPI, from .deps/venv) - both write back what they read as raw bytes /
// a new safetensors file that C++ compares bitwise.
const char* const kPyReader = R"PY(
import json, struct, sys, torch
path, out = sys.argv[1], sys.argv[2]
dt = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
      "U8": torch.uint8, "BOOL": torch.bool}
data = open(path, "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
meta = header.pop("__metadata__", {})
assert meta == {"format": "pt"}, meta
buf = data[8 + n:]
sd = {}
for k, v in header.items():
    b, e = v["data_offsets"]
    raw = bytearray(buf[b:e])
    t = torch.frombuffer(raw, dtype=dt[v["dtype"]]) if e > b else torch.empty(0, dtype=dt[v["dtype"]])
    sd[k] = t.reshape(v["shape"]).clone()
torch.save(sd, out)
)PY";

const char* const kPackageReader = R"PY(
import sys
from safetensors.numpy import load_file, save_file
from safetensors import safe_open
d = load_file(sys.argv[1])
with safe_open(sys.argv[1], framework="numpy") as f:
    assert f.metadata() == {"format": "pt"}, f.metadata()
save_file(d, sys.argv[2], metadata={"from": "python"})
)PY";

TEST(Safetensors, PythonReadsWhatCppWrites) {
  if (!python_has(python(), "torch")) GTEST_SKIP() << python() << " cannot import torch";
  const auto dir = frugal::testing::temp_dir("st_python");
  const auto t = sample_tensors();
  frugal::write_safetensors(t, dir + "/cpp.safetensors", {{"format", "pt"}});
  ASSERT_EQ(run_python(python(), dir, "pure", kPyReader,
                       frugal::testing::shell_quote(dir + "/cpp.safetensors") + " " +
                           frugal::testing::shell_quote(dir + "/back.pt")),
            "");
  expect_bitwise(frugal::read_torch_state_dict(dir + "/back.pt"), t);
}

TEST(Safetensors, ThePythonPackageReadsWhatCppWrites) {
  const std::string venv = FRUGAL_VENV_PYTHON;
  if (!python_has(venv, "safetensors") || !python_has(venv, "numpy"))
    GTEST_SKIP() << "the PyPI packages safetensors and numpy are not importable by " << venv
                 << " (scripts/python-requirements.txt)";
  const auto dir = frugal::testing::temp_dir("st_package");
  auto t = sample_tensors();
  t.erase("d.bf16");  // numpy has no bfloat16
  frugal::write_safetensors(t, dir + "/cpp.safetensors", {{"format", "pt"}});
  ASSERT_EQ(run_python(venv, dir, "pkg", kPackageReader,
                       frugal::testing::shell_quote(dir + "/cpp.safetensors") + " " +
                           frugal::testing::shell_quote(dir + "/py.safetensors")),
            "");
  std::map<std::string, std::string> meta;
  expect_bitwise(frugal::read_safetensors(dir + "/py.safetensors", &meta), t);
  EXPECT_EQ(meta.at("from"), "python");
}

}  // namespace

// Disk full while a .safetensors file is written (RLIMIT_FSIZE: write() fails part-way, as on a
// full disk): an error naming the file, the earlier file whole, no temporary file left, and the
// next write works once there is space.
TEST(Safetensors, DiskFullKeepsThePreviousFile) {
  namespace fs = std::filesystem;
  const std::string dir = frugal::testing::temp_dir("safetensors_disk_full");
  const std::string path = dir + "/weights.safetensors";
  const frugal::TensorMap small_map{{"w", torch::arange(16, torch::kFloat)}};
  frugal::write_safetensors(small_map, path);
  const std::string before = frugal::testing::read_text(path);
  const frugal::TensorMap big_map{{"w", torch::ones({64, 1024})}};

  std::string message;
  frugal::testing::with_disk_full_after(64 * 1024, [&] {  // a quarter of the new file
    message = frugal::testing::error_message([&] { frugal::write_safetensors(big_map, path); });
  });

  EXPECT_THAT(message, ::testing::HasSubstr("'" + path + "'"));
  EXPECT_THAT(message, ::testing::HasSubstr("File too large"));
  EXPECT_EQ(frugal::testing::read_text(path), before);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1u) << "no temporary file is left behind";
  frugal::write_safetensors(big_map, path);
  EXPECT_TRUE(frugal::read_safetensors(path).at("w").equal(big_map.at("w")));
}
