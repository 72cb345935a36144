// LMDB image databases: reading (LmdbFile) and writing (write_lmdb) frugal's layout
// (include/frugal/data/lmdb.h).
#include "frugal/data/lmdb.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>
#ifdef FRUGAL_WITH_LMDB
#include <lmdb.h>
#endif

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "data/pack_sample.h"
#include "frugal/data/transforms.h"
#include "frugal/error.h"

namespace frugal {

namespace {
constexpr char kMetaKey[] = "__frugal__";
}  // namespace

std::string LmdbFile::key(int64_t index) { return fmt::format("{:08d}", index); }

#ifdef FRUGAL_WITH_LMDB

bool lmdb_available() { return true; }

namespace {

std::string lmdb_error(int rc) { return mdb_strerror(rc); }

// A read-only transaction, aborted when it goes out of scope.
struct ReadTxn {
  MDB_txn* txn = nullptr;
  ReadTxn(MDB_env* env, const std::string& name) {
    const int rc = mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
    FRUGAL_CHECK(rc == 0, "cannot read the LMDB database '", name, "': ", lmdb_error(rc));
  }
  ~ReadTxn() { mdb_txn_abort(txn); }
  ReadTxn(const ReadTxn&) = delete;
  ReadTxn& operator=(const ReadTxn&) = delete;
};

// The value under `key`, or nullopt when there is none.
std::optional<MDB_val> get(MDB_txn* txn, MDB_dbi dbi, const std::string& key,
                           const std::string& name) {
  MDB_val k{key.size(), const_cast<char*>(key.data())};
  MDB_val v{};
  const int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return std::nullopt;
  FRUGAL_CHECK(rc == 0, "cannot read key '", key, "' of the LMDB database '", name,
               "': ", lmdb_error(rc));
  return v;
}

int64_t label_of(const MDB_val& v, const std::string& key, const std::string& name) {
  FRUGAL_CHECK(v.mv_size > 8, "the LMDB database '", name, "': the value of key '", key, "' has ",
               v.mv_size, " bytes; expected an int64 label and an encoded image after it");
  int64_t label;
  std::memcpy(&label, v.mv_data, 8);
  FRUGAL_CHECK(label >= 0, "the LMDB database '", name, "': key '", key, "' has label ", label,
               ", expected >= 0");
  return label;
}

}  // namespace

struct LmdbFile::Env {
  MDB_env* env = nullptr;
  MDB_dbi dbi = 0;
  ~Env() {
    if (env != nullptr) mdb_env_close(env);
  }
};

std::shared_ptr<const LmdbFile> LmdbFile::open(const std::string& path) {
  namespace fs = std::filesystem;
  std::shared_ptr<LmdbFile> db(new LmdbFile());
  db->name_ = path;
  std::error_code ec;
  const bool folder = fs::is_directory(path, ec);
  FRUGAL_CHECK(folder || fs::is_regular_file(path, ec), "cannot open the LMDB database '", path,
               "': no such file or folder");
  FRUGAL_CHECK(!folder || fs::exists(fs::path(path) / "data.mdb", ec), "'", path,
               "' is a folder without data.mdb: not an LMDB database");
  db->env_ = std::make_unique<Env>();
  int rc = mdb_env_create(&db->env_->env);
  FRUGAL_CHECK(rc == 0, "mdb_env_create: ", lmdb_error(rc));
  // Read-only, no lock file (the folder need not be writable), one transaction per read on any
  // thread (MDB_NOTLS).
  const unsigned flags = MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS | (folder ? 0u : MDB_NOSUBDIR);
  rc = mdb_env_open(db->env_->env, path.c_str(), flags, 0644);
  FRUGAL_CHECK(rc == 0, "cannot open the LMDB database '", path, "': ", lmdb_error(rc),
               rc == MDB_INVALID ? " (not an LMDB file)" : "");
  {
    ReadTxn txn(db->env_->env, path);
    rc = mdb_dbi_open(txn.txn, nullptr, 0, &db->env_->dbi);
    FRUGAL_CHECK(rc == 0, "cannot open the LMDB database '", path, "': ", lmdb_error(rc));
    const MDB_dbi dbi = db->env_->dbi;
    if (auto meta = get(txn.txn, dbi, kMetaKey, path)) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(static_cast<const char*>(meta->mv_data),
                                  static_cast<const char*>(meta->mv_data) + meta->mv_size);
        FRUGAL_CHECK(j.value("format", "") == "frugal-images" && j.value("version", 0) == 1,
                     "the LMDB database '", path, "': key '", kMetaKey,
                     "' is not frugal-images version 1");
        db->labels_ = j.at("labels").get<std::vector<int64_t>>();
        db->classes_ = j.at("classes").get<std::vector<std::string>>();
        if (j.contains("names")) db->names_ = j.at("names").get<std::vector<std::string>>();
      } catch (const nlohmann::json::exception& e) {
        throw Error(detail::concat("the LMDB database '", path, "': key '", kMetaKey,
                                   "' is not valid: ", e.what()));
      }
      FRUGAL_CHECK(j.value("samples", int64_t{-1}) == static_cast<int64_t>(db->labels_.size()) &&
                       (db->names_.empty() || db->names_.size() == db->labels_.size()),
                   "the LMDB database '", path, "': key '", kMetaKey, "' lists ",
                   db->labels_.size(), " labels and ", db->names_.size(), " names for ",
                   j.value("samples", int64_t{-1}), " samples");
      for (const int64_t l : db->labels_) {
        FRUGAL_CHECK(l >= 0 && l < static_cast<int64_t>(db->classes_.size()), "the LMDB database '",
                     path, "': label ", l, " of ", db->classes_.size(), " classes");
      }
      // The last sample must be there (a cut copy of the database fails here, not mid-epoch).
      if (!db->labels_.empty()) {
        const std::string last = key(static_cast<int64_t>(db->labels_.size()) - 1);
        FRUGAL_CHECK(get(txn.txn, dbi, last, path).has_value(), "the LMDB database '", path,
                     "' lists ", db->labels_.size(), " samples but has no key '", last, "'");
      }
    } else {
      // No metadata: the consecutive keys from 00000000, labels from the values.
      int64_t max_label = -1;
      for (int64_t i = 0;; ++i) {
        const std::string k = key(i);
        const auto v = get(txn.txn, dbi, k, path);
        if (!v) break;
        db->labels_.push_back(label_of(*v, k, path));
        max_label = std::max(max_label, db->labels_.back());
      }
      for (int64_t c = 0; c <= max_label; ++c) db->classes_.push_back(std::to_string(c));
    }
  }
  FRUGAL_CHECK(!db->labels_.empty(), "the LMDB database '", path,
               "' holds no samples (no key 00000000; docs/data.md describes the layout)");
  return db;
}

LmdbFile::~LmdbFile() = default;

int64_t LmdbFile::label(int64_t index) const {
  FRUGAL_CHECK(index >= 0 && index < size(), "the LMDB database '", name_, "' has ", size(),
               " samples; sample ", index, " asked for");
  return labels_[static_cast<size_t>(index)];
}

std::string LmdbFile::sample_name(int64_t index) const {
  label(index);
  return names_.empty() ? key(index) : names_[static_cast<size_t>(index)];
}

Image LmdbFile::with_bytes(
    int64_t index,
    const std::function<Image(const uint8_t*, size_t, const std::string&)>& use) const {
  label(index);
  const std::string k = key(index);
  ReadTxn txn(env_->env, name_);
  const auto v = get(txn.txn, env_->dbi, k, name_);
  FRUGAL_CHECK(v.has_value(), "the LMDB database '", name_, "' has no key '", k, "' (sample ",
               index, ")");
  label_of(*v, k, name_);
  const auto* bytes = static_cast<const uint8_t*>(v->mv_data);
  return use(bytes + 8, v->mv_size - 8, detail::concat(name_, ":", sample_name(index)));
}

Image LmdbFile::read(int64_t index, ColorMode mode) const {
  return with_bytes(index, [&](const uint8_t* p, size_t n, const std::string& name) {
    return decode_image(p, n, mode, name);
  });
}

Image LmdbFile::read_transformed(int64_t index, ColorMode mode, const Transform& transform,
                                 SampleRng& rng) const {
  return with_bytes(index, [&](const uint8_t* p, size_t n, const std::string& name) {
    return transform.apply_encoded(p, n, mode, name, rng);
  });
}

PackResult write_lmdb(const std::string& path, const std::vector<ImageSample>& samples,
                      const std::vector<std::string>& classes, const std::string& root,
                      const PackOptions& options) {
  namespace fs = std::filesystem;
  detail::check_pack_input("write_lmdb", path, samples, classes, options);
  FRUGAL_CHECK(options.storage == PackedStorage::kJpeg,
               "write_lmdb: LMDB holds encoded images; raw storage is for packed caches");
  // The map size bounds the file: what the sources weigh, with room for PNGs re-encoded larger.
  uint64_t source_bytes = 0;
  for (const ImageSample& s : samples) {
    std::error_code ec;
    const auto n = fs::file_size(s.path, ec);
    if (!ec) source_bytes += n;
  }
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string tmp =
      (dir / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
  fs::remove(tmp);
  PackResult result;
  MDB_env* env = nullptr;
  MDB_txn* txn = nullptr;
  auto check = [&](int rc, const char* what) {
    FRUGAL_CHECK(rc == 0, "write_lmdb: cannot write '", path, "': ", what, ": ", lmdb_error(rc));
  };
  try {
    check(mdb_env_create(&env), "mdb_env_create");
    check(mdb_env_set_mapsize(env, 3 * source_bytes + (size_t{256} << 20)), "mdb_env_set_mapsize");
    check(mdb_env_open(env, tmp.c_str(), MDB_NOSUBDIR | MDB_NOLOCK, 0644), "mdb_env_open");
    MDB_dbi dbi = 0;
    check(mdb_txn_begin(env, nullptr, 0, &txn), "mdb_txn_begin");
    check(mdb_dbi_open(txn, nullptr, 0, &dbi), "mdb_dbi_open");
    nlohmann::json labels = nlohmann::json::array(), names = nlohmann::json::array();
    std::vector<uint8_t> value;
    detail::pack_samples("write_lmdb", samples, root, options, &result,
                         [&](const std::string& name, detail::PackedSample& p) {
                           const std::string k = LmdbFile::key(static_cast<int64_t>(labels.size()));
                           value.resize(8 + p.bytes.size());
                           std::memcpy(value.data(), &p.entry.label, 8);
                           std::memcpy(value.data() + 8, p.bytes.data(), p.bytes.size());
                           MDB_val mk{k.size(), const_cast<char*>(k.data())};
                           MDB_val mv{value.size(), value.data()};
                           check(mdb_put(txn, dbi, &mk, &mv, MDB_APPEND), "mdb_put");
                           labels.push_back(p.entry.label);
                           names.push_back(name);
                           // Commit every 1,000 samples: one transaction's dirty pages stay
                           // bounded.
                           if (labels.size() % 1000 == 0) {
                             check(mdb_txn_commit(txn), "mdb_txn_commit");
                             txn = nullptr;
                             check(mdb_txn_begin(env, nullptr, 0, &txn), "mdb_txn_begin");
                           }
                         });
    const nlohmann::json meta = {{"format", "frugal-images"}, {"version", 1},
                                 {"samples", labels.size()},  {"classes", classes},
                                 {"labels", labels},          {"names", names}};
    const std::string text = meta.dump();
    MDB_val mk{sizeof(kMetaKey) - 1, const_cast<char*>(kMetaKey)};
    MDB_val mv{text.size(), const_cast<char*>(text.data())};
    check(mdb_put(txn, dbi, &mk, &mv, 0), "mdb_put");
    check(mdb_txn_commit(txn), "mdb_txn_commit");
    txn = nullptr;
    check(mdb_env_sync(env, 1), "mdb_env_sync");
    mdb_env_close(env);
    env = nullptr;
    FRUGAL_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "write_lmdb: cannot rename ", tmp,
                 " to ", path, ": ", std::strerror(errno));
  } catch (...) {
    if (txn != nullptr) mdb_txn_abort(txn);
    if (env != nullptr) mdb_env_close(env);
    fs::remove(tmp);
    throw;
  }
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::error_code ec;
  result.file_bytes = static_cast<int64_t>(fs::file_size(path, ec));
  return result;
}

#else  // no liblmdb

bool lmdb_available() { return false; }

struct LmdbFile::Env {};

std::shared_ptr<const LmdbFile> LmdbFile::open(const std::string& path) {
  throw Error(detail::concat("cannot open the LMDB database '", path,
                             "': frugal was built without liblmdb (install liblmdb-dev)"));
}
LmdbFile::~LmdbFile() = default;
int64_t LmdbFile::label(int64_t) const { return 0; }
std::string LmdbFile::sample_name(int64_t) const { return {}; }
Image LmdbFile::read(int64_t, ColorMode) const { return {}; }
Image LmdbFile::read_transformed(int64_t, ColorMode, const Transform&, SampleRng&) const {
  return {};
}
Image LmdbFile::with_bytes(
    int64_t, const std::function<Image(const uint8_t*, size_t, const std::string&)>&) const {
  return {};
}
PackResult write_lmdb(const std::string& path, const std::vector<ImageSample>&,
                      const std::vector<std::string>&, const std::string&, const PackOptions&) {
  throw Error(detail::concat("write_lmdb: cannot write '", path,
                             "': frugal was built without liblmdb (install liblmdb-dev)"));
}

#endif

}  // namespace frugal
