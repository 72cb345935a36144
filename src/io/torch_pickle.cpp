// Reads Python torch.save(model.state_dict()) files (zip format) without LibTorch's pickle_load,
// which turns the OrderedDict into None (pytorch #100741): the archive is opened with LibTorch's
// caffe2::serialize::PyTorchStreamReader and data.pkl is parsed here. Only the pickle opcodes a
// state dict uses are accepted; anything else (a pickled whole model, custom classes) is refused.
#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <unordered_map>

#include "frugal/error.h"
#include "frugal/io/weights.h"
#include "io/pickle_scan.h"

namespace frugal {
namespace {

const char* const kResave =
    "re-save it in Python with torch.save(model.state_dict(), path) (PyTorch >= 1.6, default "
    "zip format) or as .safetensors (safetensors.torch.save_file(model.state_dict(), path))";

struct Value;
using ValuePtr = std::shared_ptr<Value>;

struct Value {
  enum Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kTensor, kMark };
  Kind kind = kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s, s2;                                // string; global module / name
  std::vector<ValuePtr> items;                      // tuple, list
  std::vector<std::pair<ValuePtr, ValuePtr>> dict;  // dict (insertion order)
  at::Tensor tensor;                                // tensor or storage
};

ValuePtr new_value(Value::Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}

at::ScalarType storage_dtype(const std::string& module, const std::string& name,
                             const std::string& path) {
  static const std::pair<const char*, at::ScalarType> kTypes[] = {
      {"FloatStorage", at::kFloat}, {"DoubleStorage", at::kDouble},
      {"HalfStorage", at::kHalf},   {"BFloat16Storage", at::kBFloat16},
      {"LongStorage", at::kLong},   {"IntStorage", at::kInt},
      {"ShortStorage", at::kShort}, {"CharStorage", at::kChar},
      {"ByteStorage", at::kByte},   {"BoolStorage", at::kBool}};
  if (module == "torch")
    for (const auto& [n, t] : kTypes)
      if (name == n) return t;
  FRUGAL_CHECK(false, "read_torch_state_dict: '", path, "': unsupported storage type ", module, ".",
               name);
  return at::kFloat;
}

class Unpickler {
 public:
  Unpickler(caffe2::serialize::PyTorchStreamReader& reader, const char* data, size_t size,
            std::string path)
      : reader_(reader), p_(data), end_(data + size), path_(std::move(path)) {}
  // A pickle can put a list or dict into itself (through the memo): shared_ptr cycles, which
  // fuzz_torch_pickle found leaking. Every container made here is emptied when the reader ends.
  ~Unpickler() {
    for (const auto& weak : made_) {
      if (ValuePtr v = weak.lock()) {
        v->items.clear();
        v->dict.clear();
      }
    }
  }
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;

  ValuePtr run() {
    while (true) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80:
          u8();
          break;  // PROTO
        case 0x95:
          take(8);
          break;     // FRAME (protocol 4)
        case '.': {  // STOP
          check(!stack_.empty(), "STOP with an empty stack");
          return stack_.back();
        }
        case '(':
          push(make(Value::kMark));
          break;
        case ')':
          push(make(Value::kTuple));
          break;
        case ']':
          push(make(Value::kList));
          break;
        case '}':
          push(make(Value::kDict));
          break;
        case 'N':
          push(make(Value::kNone));
          break;
        case 0x88:
        case 0x89: {  // NEWTRUE, NEWFALSE
          auto v = make(Value::kBool);
          v->b = op == 0x88;
          push(v);
          break;
        }
        case 'J':
          push_int(static_cast<int32_t>(le(4)));
          break;  // BININT
        case 'K':
          push_int(static_cast<int64_t>(le(1)));
          break;  // BININT1
        case 'M':
          push_int(static_cast<int64_t>(le(2)));
          break;      // BININT2
        case 0x8a: {  // LONG1
          const size_t n = u8();
          check(n <= 8, "LONG1 wider than 8 bytes");
          uint64_t x = n ? le(n) : 0;
          if (n && n < 8 && (x >> (8 * n - 1)) & 1) x |= ~uint64_t{0} << (8 * n);  // sign
          push_int(static_cast<int64_t>(x));
          break;
        }
        case 'G': {  // BINFLOAT (big endian)
          uint64_t x = 0;
          for (int k = 0; k < 8; ++k) x = (x << 8) | u8();
          auto v = make(Value::kFloat);
          std::memcpy(&v->f, &x, 8);
          push(v);
          break;
        }
        case 'X':
          push_string(static_cast<size_t>(le(4)));
          break;  // BINUNICODE
        case 0x8c:
          push_string(u8());
          break;  // SHORT_BINUNICODE
        case 'q':
          memo_[le(1)] = top();
          break;  // BINPUT
        case 'r':
          memo_[le(4)] = top();
          break;  // LONG_BINPUT
        case 0x94:
          memo_[memo_.size()] = top();
          break;  // MEMOIZE
        case 'h':
          push(memo_get(le(1)));
          break;  // BINGET
        case 'j':
          push(memo_get(le(4)));
          break;     // LONG_BINGET
        case 'c': {  // GLOBAL
          auto v = make(Value::kGlobal);
          v->s = line();
          v->s2 = line();
          check_global(v->s, v->s2);
          push(v);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          auto name = pop(), module = pop();
          check(name->kind == Value::kString && module->kind == Value::kString,
                "STACK_GLOBAL without strings");
          auto v = make(Value::kGlobal);
          v->s = module->s;
          v->s2 = name->s;
          check_global(v->s, v->s2);
          push(v);
          break;
        }
        case 't': {  // TUPLE
          auto v = make(Value::kTuple);
          v->items = pop_to_mark();
          push(v);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1/2/3
          auto v = make(Value::kTuple);
          const int n = op - 0x84;
          v->items.resize(static_cast<size_t>(n));
          for (int k = n - 1; k >= 0; --k) v->items[static_cast<size_t>(k)] = pop();
          push(v);
          break;
        }
        case 'a': {  // APPEND
          auto x = pop();
          check(top()->kind == Value::kList, "APPEND to a non-list");
          top()->items.push_back(x);
          break;
        }
        case 'e': {  // APPENDS
          auto xs = pop_to_mark();
          check(top()->kind == Value::kList, "APPENDS to a non-list");
          for (auto& x : xs) top()->items.push_back(x);
          break;
        }
        case 's': {  // SETITEM
          auto v = pop(), k = pop();
          check(top()->kind == Value::kDict, "SETITEM on a non-dict");
          top()->dict.emplace_back(k, v);
          break;
        }
        case 'u': {  // SETITEMS
          auto xs = pop_to_mark();
          check(xs.size() % 2 == 0, "SETITEMS with an odd number of items");
          check(top()->kind == Value::kDict, "SETITEMS on a non-dict");
          for (size_t k = 0; k < xs.size(); k += 2) top()->dict.emplace_back(xs[k], xs[k + 1]);
          break;
        }
        case 'Q':
          push(load_storage(pop()));
          break;     // BINPERSID
        case 'R': {  // REDUCE
          auto args = pop(), fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 'b': {  // BUILD: the OrderedDict's __dict__ (_metadata): ignored
          pop();
          check(!stack_.empty() && top()->kind == Value::kDict,
                "BUILD on something other than the state dict");
          break;
        }
        default:
          FRUGAL_CHECK(false, "read_torch_state_dict: '", path_, "': unsupported pickle opcode 0x",
                       fmt::format("{:02x}", op), " at byte ", consumed() - 1,
                       "; the file holds more than a state dict of tensors: ", kResave);
      }
    }
  }

 private:
  void check(bool ok, const char* what) {
    FRUGAL_CHECK(ok, "read_torch_state_dict: '", path_, "': malformed pickle (", what, ") at byte ",
                 consumed());
  }
  size_t consumed() const { return static_cast<size_t>(p_ - begin_); }
  const char* take(size_t n) {
    check(static_cast<size_t>(end_ - p_) >= n, "truncated");
    const char* r = p_;
    p_ += n;
    return r;
  }
  uint8_t u8() { return static_cast<uint8_t>(*take(1)); }
  uint64_t le(size_t n) {
    const char* b = take(n);
    uint64_t x = 0;
    for (size_t k = n; k-- > 0;) x = (x << 8) | static_cast<uint8_t>(b[k]);
    return x;
  }
  std::string line() {
    const char* nl =
        static_cast<const char*>(std::memchr(p_, '\n', static_cast<size_t>(end_ - p_)));
    check(nl != nullptr, "GLOBAL without a newline");
    std::string s(p_, nl);
    p_ = nl + 1;
    return s;
  }
  void push(ValuePtr v) { stack_.push_back(std::move(v)); }
  void push_int(int64_t x) {
    auto v = make(Value::kInt);
    v->i = x;
    push(v);
  }
  void push_string(size_t n) {
    auto v = make(Value::kString);
    const char* b = take(n);
    v->s.assign(b, n);
    push(v);
  }
  ValuePtr top() {
    check(!stack_.empty(), "empty stack");
    return stack_.back();
  }
  ValuePtr pop() {
    check(!stack_.empty(), "empty stack");
    auto v = stack_.back();
    stack_.pop_back();
    check(v->kind != Value::kMark, "unexpected MARK");
    return v;
  }
  std::vector<ValuePtr> pop_to_mark() {
    std::vector<ValuePtr> out;
    while (true) {
      check(!stack_.empty(), "no MARK");
      auto v = stack_.back();
      stack_.pop_back();
      if (v->kind == Value::kMark) break;
      out.push_back(v);
    }
    std::reverse(out.begin(), out.end());
    return out;
  }
  ValuePtr memo_get(uint64_t k) {
    auto it = memo_.find(k);
    check(it != memo_.end(), "memo key not found");
    return it->second;
  }
  void check_global(const std::string& module, const std::string& name) {
    const bool ok =
        (module == "collections" && name == "OrderedDict") ||
        (module == "torch._utils" &&
         (name == "_rebuild_tensor_v2" || name == "_rebuild_parameter")) ||
        (module == "torch" && name.size() > 7 && name.compare(name.size() - 7, 7, "Storage") == 0);
    FRUGAL_CHECK(ok, "read_torch_state_dict: '", path_, "' refers to ", module, ".", name,
                 ": it is not a state dict of tensors (a pickled whole model or another "
                 "object?); ",
                 kResave);
  }
  ValuePtr load_storage(const ValuePtr& pid) {
    check(pid->kind == Value::kTuple && pid->items.size() == 5 &&
              pid->items[0]->kind == Value::kString && pid->items[0]->s == "storage" &&
              pid->items[1]->kind == Value::kGlobal && pid->items[2]->kind == Value::kString &&
              pid->items[4]->kind == Value::kInt,
          "persistent id is not ('storage', type, key, location, numel)");
    const auto dtype = storage_dtype(pid->items[1]->s, pid->items[1]->s2, path_);
    const auto& key = pid->items[2]->s;
    auto it = storages_.find(key);
    if (it == storages_.end()) {
      const std::string record = "data/" + key;
      FRUGAL_CHECK(reader_.hasRecord(record), "read_torch_state_dict: '", path_,
                   "': storage record '", record, "' is missing from the archive");
      auto [ptr, bytes] = reader_.getRecord(record);
      const auto elem = c10::elementSize(dtype);
      const int64_t numel = pid->items[4]->i;
      FRUGAL_CHECK(numel >= 0 && bytes == static_cast<size_t>(numel) * elem,
                   "read_torch_state_dict: '", path_, "': storage '", key, "' holds ", bytes,
                   " bytes, expected ", numel, " elements of ", c10::toString(dtype));
      auto t = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
      if (bytes) std::memcpy(t.data_ptr(), ptr.get(), bytes);
      it = storages_.emplace(key, t).first;
    }
    auto v = make(Value::kTensor);
    v->tensor = it->second;
    return v;
  }
  std::vector<int64_t> ints(const ValuePtr& v, const char* what) {
    check(v->kind == Value::kTuple || v->kind == Value::kList, what);
    std::vector<int64_t> out;
    for (const auto& x : v->items) {
      check(x->kind == Value::kInt, what);
      out.push_back(x->i);
    }
    return out;
  }
  ValuePtr reduce(const ValuePtr& fn, const ValuePtr& args) {
    check(fn->kind == Value::kGlobal && args->kind == Value::kTuple, "REDUCE without a global");
    if (fn->s == "collections") return make(Value::kDict);  // OrderedDict(): items follow
    if (fn->s2 == "_rebuild_parameter") {
      check(!args->items.empty() && args->items[0]->kind == Value::kTensor,
            "_rebuild_parameter without a tensor");
      return args->items[0];
    }
    if (fn->s2 == "_rebuild_tensor_v2") {
      const auto& a = args->items;
      check(a.size() >= 4 && a[0]->kind == Value::kTensor && a[1]->kind == Value::kInt,
            "_rebuild_tensor_v2 arguments");
      const auto size = ints(a[2], "tensor size");
      const auto stride = ints(a[3], "tensor stride");
      check(size.size() == stride.size(), "size and stride lengths differ");
      const auto& storage = a[0]->tensor;
      // Bounds: the largest element reached must lie inside the storage.
      int64_t last = a[1]->i;
      bool empty = false;
      for (size_t k = 0; k < size.size(); ++k) {
        check(size[k] >= 0 && stride[k] >= 0, "negative size or stride");
        if (size[k] == 0)
          empty = true;
        else
          last += (size[k] - 1) * stride[k];
      }
      check(a[1]->i >= 0 && (empty || last < storage.numel()), "tensor outside its storage");
      auto v = make(Value::kTensor);
      v->tensor = empty ? torch::empty(size, storage.options())
                        : storage.as_strided(size, stride, a[1]->i).clone();
      return v;
    }
    check(false, "REDUCE of an unsupported global");
    return nullptr;
  }

  caffe2::serialize::PyTorchStreamReader& reader_;
  const char* p_;
  const char* const begin_ = p_;
  const char* end_;
  std::string path_;
  ValuePtr make(Value::Kind k) {
    ValuePtr v = new_value(k);
    made_.push_back(v);
    return v;
  }

  std::vector<ValuePtr> stack_;
  std::vector<std::weak_ptr<Value>> made_;
  std::unordered_map<uint64_t, ValuePtr> memo_;
  std::unordered_map<std::string, at::Tensor> storages_;
};

TensorMap read_archive(caffe2::serialize::PyTorchStreamReader& reader, const std::string& path) {
  if (reader.hasRecord("byteorder")) {
    auto [ptr, n] = reader.getRecord("byteorder");
    const std::string order(static_cast<const char*>(ptr.get()), n);
    FRUGAL_CHECK(order == "little", "read_torch_state_dict: '", path, "' was written ", order,
                 "-endian; only little-endian files are read");
  }
  FRUGAL_CHECK(reader.hasRecord("data.pkl"), "read_torch_state_dict: '", path,
               "' has no data.pkl: it is a TorchScript archive or not from torch.save; ", kResave);
  auto [ptr, size] = reader.getRecord("data.pkl");
  Unpickler up(reader, static_cast<const char*>(ptr.get()), size, path);
  const ValuePtr root = up.run();
  FRUGAL_CHECK(root->kind == Value::kDict, "read_torch_state_dict: '", path,
               "' holds a pickled object that is not a dict of tensors; ", kResave);
  TensorMap out;
  for (const auto& [k, v] : root->dict) {
    FRUGAL_CHECK(k->kind == Value::kString, "read_torch_state_dict: '", path,
                 "': a key is not a string");
    FRUGAL_CHECK(v->kind == Value::kTensor, "read_torch_state_dict: '", path, "': entry '", k->s,
                 "' is not a tensor; ", kResave);
    out[k->s] = v->tensor;
  }
  return out;
}

}  // namespace

TensorMap read_torch_state_dict(const std::string& path) {
  std::ifstream probe(path, std::ios::binary);
  FRUGAL_CHECK(probe.good(), "read_torch_state_dict: cannot open '", path, "'");
  char magic[4] = {};
  probe.read(magic, 4);
  FRUGAL_CHECK(probe.gcount() == 4, "read_torch_state_dict: '", path, "' is too short");
  probe.close();
  if (!(magic[0] == 'P' && magic[1] == 'K')) {
    FRUGAL_CHECK(static_cast<uint8_t>(magic[0]) != 0x80, "read_torch_state_dict: '", path,
                 "' is a legacy (pre-1.6, _use_new_zipfile_serialization=False) torch.save "
                 "file, which frugal does not read; ",
                 kResave);
    FRUGAL_CHECK(false, "read_torch_state_dict: '", path,
                 "' is neither a torch.save zip file nor safetensors; ", kResave);
  }
  // PyTorchStreamReader reports a damaged archive (bad central directory, a record whose local
  // header or CRC does not match) with c10::Error, from its constructor or from any later
  // getRecord; each becomes a frugal::Error naming the file (fuzz/fuzz_torch_state_dict found a
  // record with a broken local header escaping as c10::Error).
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    return read_archive(reader, path);
  } catch (const c10::Error& e) {
    FRUGAL_CHECK(false, "read_torch_state_dict: '", path,
                 "' is not a readable torch.save zip archive (", e.what_without_backtrace(), ")");
  }
  return {};  // not reached
}

}  // namespace frugal

namespace frugal::detail {

std::string pickle_bounds_problem(const char* data, size_t size) {
  auto le32 = [](const unsigned char* b) {
    return uint64_t{b[0]} | uint64_t{b[1]} << 8 | uint64_t{b[2]} << 16 | uint64_t{b[3]} << 24;
  };
  // Each opcode's argument (pickletools' table, protocols 0-5): none; a fixed number of bytes; a
  // 1-, 4- or 8-byte little-endian length, then that many bytes; or one or two lines.
  struct Kind {
    const char* opcodes;
    int fixed, prefix, lines;
  };
  static const Kind kKinds[] = {
      {"(012NRabd}el]ostu)Q\x81\x85\x86\x87\x88\x89\x8f\x90\x91\x92\x93\x94\x97\x98", 0, 0, 0},
      {"Khq\x80\x82", 1, 0, 0},
      {"M\x83", 2, 0, 0},
      {"Jjr\x84", 4, 0, 0},
      {"G\x95", 8, 0, 0},
      {"CU\x8a\x8c", 0, 1, 0},
      {"TXB\x8b", 0, 4, 0},
      {"\x8d\x8e\x96", 0, 8, 0},
      {"ILFSVPgp", 0, 0, 1},
      {"ci", 0, 0, 2},
  };
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  size_t pos = 0;
  uint64_t memoized = 0;  // values put in the memo so far: picklers number them 0, 1, 2, ...
  while (pos < size) {
    const size_t at = pos;
    const unsigned char op = p[pos++];
    if (op == '.') return {};  // STOP
    const Kind* kind = nullptr;
    for (const Kind& k : kKinds) {
      if (op != 0 && std::strchr(k.opcodes, op) != nullptr) kind = &k;
    }
    if (kind == nullptr) return fmt::format("unknown pickle opcode 0x{:02x} at byte {}", op, at);
    const std::string cut = fmt::format("opcode 0x{:02x} at byte {} is cut short", op, at);
    const size_t head = static_cast<size_t>(kind->fixed + kind->prefix);
    if (head > size - pos) return cut;
    uint64_t n = 0;
    for (int k = kind->prefix - 1; k >= 0; --k) n = n << 8 | p[pos + k];
    // A memo index far past the values memoized so far made LibTorch size its memo table by it
    // (27 GB; fuzz_checkpoint).
    if (op == 'q' || op == 'r' || op == 'h' || op == 'j') {
      const uint64_t id = op == 'q' || op == 'h' ? p[pos] : le32(p + pos);
      const bool put = op == 'q' || op == 'r';
      if (put ? id > memoized : id >= memoized) {
        return fmt::format("memo index {} at byte {} with {} values memoized", id, at, memoized);
      }
    }
    if (op == 'q' || op == 'r' || op == 'p' || op == 0x94) ++memoized;
    pos += head;
    if (n > size - pos) {
      return fmt::format("opcode 0x{:02x} at byte {} claims {} bytes, {} remain", op, at, n,
                         size - pos);
    }
    pos += n;
    for (int line = 0; line < kind->lines; ++line) {
      const void* nl = std::memchr(p + pos, '\n', size - pos);
      if (nl == nullptr) return cut;
      pos = static_cast<size_t>(static_cast<const unsigned char*>(nl) - p) + 1;
    }
  }
  return "the pickle has no STOP";
}

}  // namespace frugal::detail
