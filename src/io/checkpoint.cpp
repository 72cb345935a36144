// Checkpoint files: atomic writing, the archive layout, strict loading.
//
// Layout of a checkpoint (a LibTorch serialization archive):
//   frugal_format   int     kFormat
//   weights_only    bool
//   model           archive Module::save's layout (parameters and buffers, children nested),
//                           tensors on CPU
//   optimizer       archive Optimizer::save (full checkpoints only)
//   trainer_state   uint8 tensor: a pickled dict (torch::pickle_save) with the loop counters,
//                           RNG states, scheduler/precision/callback/metric states, options and
//                           the frugal version (full checkpoints only)
#include "frugal/io/checkpoint.h"

#include <caffe2/serialize/inline_container.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <torch/serialize.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <set>
#include <sstream>

#include "frugal/error.h"
#include "io/checkpoint_io.h"
#include "io/checksum.h"
#include "io/pickle_scan.h"

namespace frugal {

namespace detail {

namespace {
std::string errno_text() { return std::strerror(errno); }

void fsync_dir(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // some file systems refuse; the rename is still atomic
  ::fsync(fd);
  ::close(fd);
}
}  // namespace

void write_atomically(
    const std::string& path,
    const std::function<void(const std::function<void(const void*, size_t)>&)>& write) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  FRUGAL_CHECK(!ec, "cannot create folder ", dir.string(), " for ", path, ": ", ec.message());
  // Hidden, unique per process and call; same folder, so rename() never crosses file systems.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = (dir / ("." + target.filename().string() + ".tmp." +
                                  std::to_string(::getpid()) + "." + std::to_string(counter++)))
                              .string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  FRUGAL_CHECK(fd >= 0, "cannot write '", path, "': cannot create ", tmp, ": ", errno_text());
  try {
    // A failed write is remembered and the rest discarded, not thrown from inside `write`:
    // LibTorch's archive writer cannot unwind through its sink (its destructor finishes the
    // archive through the same sink and aborts the process on a second error).
    std::string failure;
    write([&](const void* data, size_t size) {
      const char* p = static_cast<const char*>(data);
      while (size > 0 && failure.empty()) {
        ssize_t n = ::write(fd, p, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          failure = n < 0 ? errno_text() : "no byte written";
          break;
        }
        p += n;
        size -= static_cast<size_t>(n);
      }
    });
    FRUGAL_CHECK(failure.empty(), "cannot write '", path, "': ", failure,
                 " (the previous file, if any, is unchanged)");
    FRUGAL_CHECK(::fsync(fd) == 0, "cannot write '", path, "': fsync: ", errno_text());
    FRUGAL_CHECK(::close(fd) == 0, "cannot write '", path, "': close: ", errno_text());
    fd = -1;
    FRUGAL_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, " to ", path,
                 ": ", errno_text());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_dir(dir);
}

void ensure_writable_dir(const std::string& dir, bool create, const std::string& who) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (create) {
    fs::create_directories(dir, ec);
    FRUGAL_CHECK(!ec, who, ": cannot create the folder '", dir, "': ", ec.message());
  }
  // The folder, or (not created yet) the nearest existing folder above it, must take a file.
  fs::path existing = fs::absolute(fs::path(dir), ec);
  while (!fs::exists(existing, ec) && existing.has_parent_path() &&
         existing.parent_path() != existing) {
    existing = existing.parent_path();
  }
  FRUGAL_CHECK(fs::is_directory(existing, ec), who, ": cannot use the folder '", dir, "': '",
               existing.string(), "' is not a folder");
  const std::string probe =
      (existing / (".frugal-write-test." + std::to_string(::getpid()))).string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  FRUGAL_CHECK(fd >= 0, who, ": cannot write to the folder '", dir, "'",
               existing.string() == dir ? std::string() : " (in '" + existing.string() + "')", ": ",
               errno_text(), " (checked before training starts)");
  ::close(fd);
  ::unlink(probe.c_str());
}

c10::IValue to_ivalue(const StateDict& state) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [key, value] : state) dict.insert(key, value);
  return dict;
}

StateDict from_ivalue(const c10::IValue& value) {
  FRUGAL_CHECK(value.isGenericDict(), "expected a state dict, got ", value.tagKind());
  StateDict out;
  for (const auto& entry : value.toGenericDict()) out[entry.key().toStringRef()] = entry.value();
  return out;
}

namespace {
// LibTorch's unpickler reserves what a length field claims before reading the bytes
// (io/pickle_scan.h): the archive's pickles are checked first, so that a damaged checkpoint
// without a checksum (or read with verify = false) cannot make it allocate gigabytes.
// `open` makes the archive's reader (a file, or bytes in memory).
template <class Open>
std::string pickle_problem(Open open) {
  try {
    std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader = open();
    for (const char* name : {"data.pkl", "constants.pkl"}) {
      if (!reader->hasRecord(name)) continue;
      auto [ptr, n] = reader->getRecord(name);
      std::string problem = pickle_bounds_problem(static_cast<const char*>(ptr.get()), n);
      if (!problem.empty()) return std::string(name) + ": " + problem;
    }
  } catch (const std::exception& e) {
    const std::string reason = e.what();
    return reason.substr(0, reason.find('\n'));
  }
  return {};
}
}  // namespace

at::Tensor pack(const StateDict& state) {
  std::vector<char> bytes = torch::pickle_save(to_ivalue(state));
  at::Tensor t = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

StateDict unpack(const at::Tensor& packed) {
  at::Tensor t = packed.to(at::kCPU).contiguous();
  std::vector<char> bytes(static_cast<size_t>(t.numel()));
  std::memcpy(bytes.data(), t.data_ptr(), bytes.size());
  // The packed state is a pickle_save archive in memory: its pickle is checked as the file's is
  // (fuzz_checkpoint found a length field here that made LibTorch reserve 1.3 GB).
  std::istringstream in(std::string(bytes.begin(), bytes.end()));
  const std::string problem =
      pickle_problem([&] { return std::make_unique<caffe2::serialize::PyTorchStreamReader>(&in); });
  FRUGAL_CHECK(problem.empty(), "its pickle is damaged: ", problem);
  return from_ivalue(torch::pickle_load(bytes));
}

void save_module(const torch::nn::Module& module, torch::serialize::OutputArchive& archive) {
  // Module::save's layout, with every tensor copied to CPU first (loads on any machine).
  for (const auto& p : module.named_parameters(/*recurse=*/false)) {
    archive.write(p.key(), p.value().detach().to(at::kCPU));
  }
  for (const auto& b : module.named_buffers(/*recurse=*/false)) {
    archive.write(b.key(), b.value().detach().to(at::kCPU), /*is_buffer=*/true);
  }
  for (const auto& child : module.named_children()) {
    if (!child.value()->is_serializable()) continue;
    torch::serialize::OutputArchive sub(archive.compilation_unit());
    save_module(*child.value(), sub);
    archive.write(child.key(), sub);
  }
}

namespace {
void plan_module(torch::nn::Module& module, torch::serialize::InputArchive& archive,
                 const std::string& prefix, const std::string& path,
                 std::vector<std::pair<at::Tensor, at::Tensor>>& plan) {
  std::set<std::string> known;
  auto check = [&](const std::string& key, const at::Tensor& dst, bool is_buffer) {
    at::Tensor src;
    const char* what = is_buffer ? "buffer" : "parameter";
    FRUGAL_CHECK(archive.try_read(key, src, is_buffer), "checkpoint ", path, " has no ", what,
                 " \"", prefix + key, "\" (the model's has shape ", dst.sizes(),
                 "): it was saved from a different model");
    FRUGAL_CHECK(src.sizes() == dst.sizes(), "checkpoint ", path, ": ", what, " \"", prefix + key,
                 "\" has shape ", src.sizes(), " in the file but ", dst.sizes(), " in the model");
    plan.emplace_back(dst, src);
    known.insert(key);
  };
  for (auto& p : module.named_parameters(/*recurse=*/false)) check(p.key(), p.value(), false);
  for (auto& b : module.named_buffers(/*recurse=*/false)) check(b.key(), b.value(), true);
  for (auto& child : module.named_children()) {
    if (!child.value()->is_serializable()) continue;
    torch::serialize::InputArchive sub;
    FRUGAL_CHECK(archive.try_read(child.key(), sub), "checkpoint ", path, " has no module \"",
                 prefix + child.key(), "\": it was saved from a different model");
    plan_module(*child.value(), sub, prefix + child.key() + ".", path, plan);
    known.insert(child.key());
  }
  for (const auto& key : archive.keys()) {
    FRUGAL_CHECK(known.count(key) > 0, "checkpoint ", path, " has \"", prefix + key,
                 "\", which the model does not have: it was saved from a different model");
  }
}
}  // namespace

LoadedCheckpoint open_checkpoint(const std::string& path, c10::Device device, bool verify) {
  FRUGAL_CHECK(!path.empty(), "checkpoint path is empty");
  FRUGAL_CHECK(std::filesystem::is_regular_file(path), "checkpoint file not found: ", path);
  if (verify && verify_checksum(path) == ChecksumStatus::kAbsent) {
    std::cerr << "frugal: warning: checkpoint " << path
              << " has no checksum (written before frugal recorded one, or not by frugal); "
                 "loading it unverified\n";
  }
  LoadedCheckpoint ckpt;
  ckpt.path = path;
  const std::string problem = pickle_problem(
      [&] { return std::make_unique<caffe2::serialize::PyTorchStreamReader>(path); });
  FRUGAL_CHECK(problem.empty(), "cannot read checkpoint ", path,
               ": the file is truncated, corrupt or not a LibTorch archive (", problem, ")");
  try {
    ckpt.root.load_from(path, device);
  } catch (const std::exception& e) {
    std::string reason = e.what();
    reason = reason.substr(0, reason.find('\n'));
    FRUGAL_CHECK(false, "cannot read checkpoint ", path,
                 ": the file is truncated, corrupt or not a LibTorch archive (", reason, ")");
  }
  c10::IValue format;
  FRUGAL_CHECK(ckpt.root.try_read("frugal_format", format) && format.isInt(), "checkpoint ", path,
               " is not a frugal checkpoint (it has no frugal_format entry)");
  FRUGAL_CHECK(format.toInt() <= kFormat, "checkpoint ", path, " has format ", format.toInt(),
               ", newer than this frugal understands (", kFormat, ")");
  c10::IValue weights_only;
  FRUGAL_CHECK(ckpt.root.try_read("weights_only", weights_only) && weights_only.isBool(),
               "checkpoint ", path, " has no weights_only entry: it is damaged");
  ckpt.weights_only = weights_only.toBool();
  FRUGAL_CHECK(ckpt.root.try_read("model", ckpt.model), "checkpoint ", path,
               " has no model entry: it is damaged");
  if (!ckpt.weights_only) {
    at::Tensor packed;
    FRUGAL_CHECK(ckpt.root.try_read("trainer_state", packed), "checkpoint ", path,
                 " has no trainer_state entry: it is damaged");
    try {
      ckpt.state = unpack(packed);
    } catch (const std::exception& e) {
      FRUGAL_CHECK(false, "checkpoint ", path, ": its trainer state cannot be read (", e.what(),
                   ")");
    }
  }
  return ckpt;
}

std::vector<std::pair<at::Tensor, at::Tensor>> plan_weights(torch::nn::Module& module,
                                                            LoadedCheckpoint& ckpt) {
  std::vector<std::pair<at::Tensor, at::Tensor>> plan;
  plan_module(module, ckpt.model, "", ckpt.path, plan);
  return plan;
}

void apply_weights(const std::vector<std::pair<at::Tensor, at::Tensor>>& plan) {
  at::NoGradGuard no_grad;
  for (const auto& [dst, src] : plan) const_cast<at::Tensor&>(dst).copy_(src);
}

}  // namespace detail

void load_weights(torch::nn::Module& module, const std::string& path, bool verify_checksum) {
  detail::LoadedCheckpoint ckpt =
      detail::open_checkpoint(path, c10::Device(c10::kCPU), verify_checksum);
  detail::apply_weights(detail::plan_weights(module, ckpt));
}

}  // namespace frugal
