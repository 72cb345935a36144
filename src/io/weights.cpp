// safetensors read/write and load_state_dict (see frugal/io/weights.h).
#include "frugal/io/weights.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "frugal/error.h"
#include "frugal/io/sparse_weights.h"
#include "frugal/loggers/logger.h"

namespace frugal {
namespace {

constexpr uint64_t kMaxHeader = 100'000'000;

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  size_t size;
};

// The safetensors dtypes LibTorch can hold (U16/U32/U64/F8 have no 1.13 tensor type).
const DtypeInfo kDtypes[] = {
    {"BOOL", at::kBool, 1}, {"U8", at::kByte, 1},   {"I8", at::kChar, 1},
    {"I16", at::kShort, 2}, {"F16", at::kHalf, 2},  {"BF16", at::kBFloat16, 2},
    {"I32", at::kInt, 4},   {"F32", at::kFloat, 4}, {"F64", at::kDouble, 8},
    {"I64", at::kLong, 8},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo& dtype_by_type(at::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d;
  FRUGAL_CHECK(false, "safetensors: cannot store dtype ", c10::toString(t));
  return kDtypes[0];
}

std::string shape_str(at::IntArrayRef s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

constexpr const char* kSparseKey = "__frugal_sparse__";

/// Replaces the mask + values pairs listed in `sparse_json` (the __frugal_sparse__ metadata) by
/// dense tensors; errors name `path` and the tensor. Defined with the sparse writer below.
void densify_sparse_tensors(TensorMap& tensors, const std::string& sparse_json,
                            const std::string& path);

}  // namespace

TensorMap read_safetensors(const std::string& path, std::map<std::string, std::string>* metadata) {
  std::ifstream in(path, std::ios::binary);
  FRUGAL_CHECK(in.good(), "read_safetensors: cannot open '", path, "'");
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  FRUGAL_CHECK(file_size >= 8, "read_safetensors: '", path, "' is ", file_size,
               " bytes, too short for the 8-byte header length");
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  FRUGAL_CHECK(header_len <= kMaxHeader, "read_safetensors: '", path, "': header length ",
               header_len, " exceeds the limit of ", kMaxHeader, " bytes");
  FRUGAL_CHECK(header_len <= file_size - 8, "read_safetensors: '", path, "': header length ",
               header_len, " runs past the end of the file (", file_size, " bytes)");
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const std::exception& e) {
    FRUGAL_CHECK(false, "read_safetensors: '", path, "': header is not valid JSON (", e.what(),
                 ")");
  }
  FRUGAL_CHECK(j.is_object(), "read_safetensors: '", path, "': header is not a JSON object");
  const uint64_t data_size = file_size - 8 - header_len;

  struct Entry {
    std::string name;
    const DtypeInfo* dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  std::string sparse_json;  // tensors stored as mask + values (frugal/io/sparse_weights.h)
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      FRUGAL_CHECK(it->is_object(), "read_safetensors: '", path,
                   "': __metadata__ must be an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        FRUGAL_CHECK(m->is_string(), "read_safetensors: '", path, "': __metadata__ value of '",
                     m.key(), "' is not a string");
        if (metadata) (*metadata)[m.key()] = m->get<std::string>();
        if (m.key() == kSparseKey) sparse_json = m->get<std::string>();
      }
      continue;
    }
    const auto& v = *it;
    FRUGAL_CHECK(
        v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"),
        "read_safetensors: '", path, "': entry '", it.key(),
        "' needs dtype, shape and data_offsets");
    FRUGAL_CHECK(v["dtype"].is_string(), "read_safetensors: '", path, "': entry '", it.key(),
                 "': dtype is not a string");
    const auto dtype_name = v["dtype"].get<std::string>();
    const DtypeInfo* dtype = dtype_by_name(dtype_name);
    FRUGAL_CHECK(dtype != nullptr, "read_safetensors: '", path, "': entry '", it.key(),
                 "' has unknown or unsupported dtype '", dtype_name,
                 "' (supported: BOOL U8 I8 I16 F16 BF16 I32 F32 F64 I64)");
    Entry e{it.key(), dtype, {}, 0, 0};
    FRUGAL_CHECK(v["shape"].is_array(), "read_safetensors: '", path, "': entry '", it.key(),
                 "': shape is not a list");
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      FRUGAL_CHECK(d.is_number_unsigned(), "read_safetensors: '", path, "': entry '", it.key(),
                   "': shape holds a non-negative-integer value");
      const auto n = d.get<uint64_t>();
      FRUGAL_CHECK(n < (uint64_t{1} << 40) && (n == 0 || numel <= (uint64_t{1} << 40) / n),
                   "read_safetensors: '", path, "': entry '", it.key(), "': shape too large");
      numel *= n;
      e.shape.push_back(static_cast<int64_t>(n));
    }
    const auto& off = v["data_offsets"];
    FRUGAL_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                     off[1].is_number_unsigned(),
                 "read_safetensors: '", path, "': entry '", it.key(),
                 "': data_offsets must be [begin, end]");
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    FRUGAL_CHECK(e.begin <= e.end && e.end <= data_size, "read_safetensors: '", path, "': entry '",
                 it.key(), "': data_offsets [", e.begin, ", ", e.end,
                 "] outside the data buffer of ", data_size, " bytes");
    FRUGAL_CHECK(e.end - e.begin == numel * dtype->size, "read_safetensors: '", path, "': entry '",
                 it.key(), "': ", e.end - e.begin, " bytes for shape ", shape_str(e.shape), " of ",
                 dtype_name, " (expected ", numel * dtype->size, ")");
    entries.push_back(std::move(e));
  }
  // Offsets must tile the buffer: sorted by begin, each starts where the previous ended.
  std::vector<const Entry*> order;
  for (const auto& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  for (const Entry* e : order) {
    FRUGAL_CHECK(e->begin == pos, "read_safetensors: '", path, "': entry '", e->name,
                 "' starts at byte ", e->begin, " but the previous entry ends at ", pos,
                 e->begin < pos ? " (overlapping offsets)" : " (gap between entries)");
    pos = e->end;
  }
  FRUGAL_CHECK(pos == data_size, "read_safetensors: '", path, "': entries cover ", pos,
               " bytes but the data buffer holds ", data_size);

  TensorMap out;
  const auto data_start = static_cast<std::streamoff>(8 + header_len);
  for (const auto& e : entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype->type));
    if (e.end > e.begin) {
      in.seekg(data_start + static_cast<std::streamoff>(e.begin));
      in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e.end - e.begin));
      FRUGAL_CHECK(in.good(), "read_safetensors: '", path, "': short read for entry '", e.name,
                   "'");
    }
    out.emplace(e.name, std::move(t));
  }
  if (!sparse_json.empty()) densify_sparse_tensors(out, sparse_json, path);
  return out;
}

void write_safetensors(const TensorMap& tensors, const std::string& path,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, at::Tensor>> items;
  for (const auto& [name, t] : tensors) {
    FRUGAL_CHECK(name != "__metadata__",
                 "write_safetensors: a tensor may not be named "
                 "__metadata__");
    FRUGAL_CHECK(t.defined(), "write_safetensors: tensor '", name, "' is undefined");
    dtype_by_type(t.scalar_type());
    items.emplace_back(name, t.detach().to(torch::kCPU).contiguous());
  }
  std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
    const auto sa = dtype_by_type(a.second.scalar_type()).size;
    const auto sb = dtype_by_type(b.second.scalar_type()).size;
    return sa != sb ? sa > sb : a.first < b.first;
  });
  // nlohmann::ordered_json keeps insertion order (the data order).
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : items) {
    const auto& d = dtype_by_type(t.scalar_type());
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * d.size;
    header[name] = {
        {"dtype", d.name}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string content;
  content.reserve(8 + h.size() + offset);
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) content.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  content += h;
  for (const auto& [name, t] : items)
    content.append(static_cast<const char*>(t.data_ptr()),
                   static_cast<size_t>(t.numel()) * dtype_by_type(t.scalar_type()).size);
  detail::write_file_atomically(path, content);
}

TensorMap module_state(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out[p.key()] = p.value();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out[b.key()] = b.value();
  return out;
}

void save_safetensors(const torch::nn::Module& module, const std::string& path,
                      const std::map<std::string, std::string>& metadata) {
  write_safetensors(module_state(module), path, metadata);
}

namespace {
bool is_safetensors_file(const std::string& path) {
  const std::string ext = ".safetensors";
  if (path.size() >= ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0)
    return true;
  std::ifstream in(path, std::ios::binary);
  char b[9] = {};
  in.read(b, 9);
  // A zip file starts with "PK"; safetensors with a length then '{'.
  return in.gcount() == 9 && b[8] == '{';
}
}  // namespace

LoadStateDictResult load_state_dict(torch::nn::Module& module, const std::string& path,
                                    const LoadStateDictOptions& options) {
  std::ifstream probe(path, std::ios::binary);
  FRUGAL_CHECK(probe.good(), "load_state_dict: cannot open '", path, "'");
  probe.close();
  const TensorMap tensors =
      is_safetensors_file(path) ? read_safetensors(path) : read_torch_state_dict(path);
  try {
    return load_state_dict(module, tensors, options);
  } catch (const std::exception& e) {
    FRUGAL_CHECK(false, "load_state_dict('", path, "'): ", e.what());
  }
  return {};
}

LoadStateDictResult load_state_dict(torch::nn::Module& module, const TensorMap& tensors,
                                    const LoadStateDictOptions& options) {
  LoadStateDictResult r;
  const TensorMap targets = module_state(module);
  std::vector<std::pair<at::Tensor, at::Tensor>> plan;
  std::vector<std::string> dtype_errors;
  for (const auto& [name, target] : targets) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      r.missing_keys.push_back(name);
      continue;
    }
    const auto& src = it->second;
    if (src.sizes() != target.sizes()) {
      r.mismatched_keys.push_back(fmt::format("{}: file {} vs module {}", name,
                                              shape_str(src.sizes()), shape_str(target.sizes())));
      continue;
    }
    if (src.scalar_type() != target.scalar_type()) {
      const bool both_float =
          at::isFloatingType(src.scalar_type()) && at::isFloatingType(target.scalar_type());
      const bool both_int = at::isIntegralType(src.scalar_type(), false) &&
                            at::isIntegralType(target.scalar_type(), false);
      if (!options.allow_dtype_conversion || !(both_float || both_int)) {
        r.mismatched_keys.push_back(fmt::format("{}: file dtype {} vs module dtype {}", name,
                                                c10::toString(src.scalar_type()),
                                                c10::toString(target.scalar_type())));
        continue;
      }
    }
    plan.emplace_back(target, src);
    r.loaded_keys.push_back(name);
  }
  for (const auto& [name, t] : tensors)
    if (!targets.count(name)) r.unexpected_keys.push_back(name);
  if (options.strict &&
      (!r.missing_keys.empty() || !r.unexpected_keys.empty() || !r.mismatched_keys.empty())) {
    std::string msg = "load_state_dict (strict): the module was left unchanged;";
    if (!r.missing_keys.empty())
      msg += fmt::format(" missing keys ({}): {};", r.missing_keys.size(),
                         fmt::join(r.missing_keys, ", "));
    if (!r.unexpected_keys.empty())
      msg += fmt::format(" unexpected keys ({}): {};", r.unexpected_keys.size(),
                         fmt::join(r.unexpected_keys, ", "));
    if (!r.mismatched_keys.empty())
      msg += fmt::format(" mismatched ({}): {};", r.mismatched_keys.size(),
                         fmt::join(r.mismatched_keys, "; "));
    msg.pop_back();
    FRUGAL_CHECK(false, msg);
  }
  torch::NoGradGuard no_grad;
  for (auto& [target, src] : plan) target.copy_(src);
  return r;
}

// ---- sparse storage (frugal/io/sparse_weights.h) ----

void write_sparse_safetensors(const TensorMap& tensors, const std::string& path,
                              double min_sparsity,
                              const std::map<std::string, std::string>& metadata) {
  FRUGAL_CHECK(min_sparsity >= 0.0 && min_sparsity <= 1.0,
               "write_sparse_safetensors: min_sparsity must be in [0, 1], got ", min_sparsity);
  FRUGAL_CHECK(metadata.count(kSparseKey) == 0, "write_sparse_safetensors: metadata key '",
               kSparseKey, "' is frugal's own");
  auto ends_with = [](const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  TensorMap out;
  nlohmann::json listed = nlohmann::json::object();
  for (const auto& [name, value] : tensors) {
    FRUGAL_CHECK(!ends_with(name, ".__mask") && !ends_with(name, ".__values"),
                 "write_sparse_safetensors: tensor name '", name,
                 "' ends in .__mask or .__values, which the sparse layout uses");
    at::Tensor t = value.detach().to(at::kCPU).contiguous();
    const int64_t n = t.numel();
    if (!at::isFloatingType(t.scalar_type()) || n == 0) {
      out[name] = t;
      continue;
    }
    at::Tensor flat = t.reshape({-1});
    at::Tensor nonzero = flat.ne(0);
    const int64_t nnz = nonzero.sum().item<int64_t>();
    const double zeros = static_cast<double>(n - nnz) / static_cast<double>(n);
    const int64_t sparse_bytes = (n + 7) / 8 + nnz * static_cast<int64_t>(t.element_size());
    if (zeros < min_sparsity || sparse_bytes >= static_cast<int64_t>(t.nbytes())) {
      out[name] = t;
      continue;
    }
    // Bit i of the flattened tensor -> byte i / 8, bit i % 8 (numpy.packbits bitorder="little").
    at::Tensor bits = at::zeros({((n + 7) / 8) * 8}, at::kByte);
    bits.narrow(0, 0, n).copy_(nonzero);
    at::Tensor weights = at::pow(2, at::arange(8, at::kInt)).to(at::kByte);
    at::Tensor mask = (bits.reshape({-1, 8}) * weights).sum(1).to(at::kByte);
    out[name + ".__mask"] = mask;
    out[name + ".__values"] = flat.masked_select(nonzero);
    listed[name] = {{"shape", t.sizes().vec()}, {"dtype", dtype_by_type(t.scalar_type()).name}};
  }
  std::map<std::string, std::string> meta = metadata;
  meta[kSparseKey] = nlohmann::json{{"version", 1}, {"tensors", listed}}.dump();
  write_safetensors(out, path, meta);
}

void save_sparse_safetensors(const torch::nn::Module& module, const std::string& path,
                             double min_sparsity,
                             const std::map<std::string, std::string>& metadata) {
  write_sparse_safetensors(module_state(module), path, min_sparsity, metadata);
}

namespace {

void densify_sparse_tensors(TensorMap& tensors, const std::string& sparse_json,
                            const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(sparse_json);
  } catch (const std::exception& e) {
    FRUGAL_CHECK(false, "read_safetensors: '", path, "': metadata ", kSparseKey,
                 " is not valid JSON (", e.what(), ")");
  }
  FRUGAL_CHECK(j.is_object() && j.value("version", 0) == 1 && j.contains("tensors") &&
                   j["tensors"].is_object(),
               "read_safetensors: '", path, "': metadata ", kSparseKey,
               " must be {\"version\": 1, \"tensors\": {...}}, got ", sparse_json.substr(0, 200));
  for (auto it = j["tensors"].begin(); it != j["tensors"].end(); ++it) {
    const std::string& name = it.key();
    const auto& info = *it;
    const std::string where = fmt::format("read_safetensors: '{}': sparse tensor '{}'", path, name);
    FRUGAL_CHECK(info.is_object() && info.contains("shape") && info["shape"].is_array() &&
                     info.contains("dtype") && info["dtype"].is_string(),
                 where, " needs a shape and a dtype");
    std::vector<int64_t> shape;
    int64_t n = 1;
    for (const auto& d : info["shape"]) {
      FRUGAL_CHECK(d.is_number_unsigned() && d.get<uint64_t>() < (uint64_t{1} << 40), where,
                   " has a bad shape ", info["shape"].dump());
      shape.push_back(d.get<int64_t>());
      n *= shape.back();
      FRUGAL_CHECK(n < (int64_t{1} << 40), where, " has a shape too large");
    }
    const DtypeInfo* dtype = dtype_by_name(info["dtype"].get<std::string>());
    FRUGAL_CHECK(dtype != nullptr, where, " has unknown dtype ", info["dtype"].dump());
    auto mask_it = tensors.find(name + ".__mask");
    auto values_it = tensors.find(name + ".__values");
    FRUGAL_CHECK(mask_it != tensors.end() && values_it != tensors.end(), where, " lacks ",
                 mask_it == tensors.end() ? name + ".__mask" : name + ".__values");
    FRUGAL_CHECK(tensors.count(name) == 0, where, " is also stored dense");
    const at::Tensor& mask = mask_it->second;
    const at::Tensor& values = values_it->second;
    FRUGAL_CHECK(mask.scalar_type() == at::kByte && mask.dim() == 1 && mask.numel() == (n + 7) / 8,
                 where, ": the mask must be ", (n + 7) / 8, " U8 bytes for shape ",
                 shape_str(shape), ", got ", mask.scalar_type(), " ", shape_str(mask.sizes()));
    at::Tensor bits = mask.unsqueeze(1)
                          .bitwise_right_shift(at::arange(8, at::kByte))
                          .bitwise_and(1)
                          .reshape({-1})
                          .to(at::kBool);
    FRUGAL_CHECK(!bits.narrow(0, n, bits.numel() - n).any().item<bool>(), where,
                 ": the mask has bits set past the tensor's ", n, " elements");
    at::Tensor keep = bits.narrow(0, 0, n);
    const int64_t nnz = keep.sum().item<int64_t>();
    FRUGAL_CHECK(values.scalar_type() == dtype->type && values.dim() == 1 && values.numel() == nnz,
                 where, ": the mask marks ", nnz, " non-zeros, so the values must be ", nnz, " ",
                 dtype->name, ", got ", values.scalar_type(), " ", shape_str(values.sizes()));
    at::Tensor dense = at::zeros({n}, at::TensorOptions().dtype(dtype->type));
    dense.masked_scatter_(keep, values);
    tensors.erase(mask_it);
    tensors.erase(values_it);
    tensors.emplace(name, dense.reshape(shape));
  }
}

}  // namespace

}  // namespace frugal
