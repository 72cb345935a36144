// LMDB image databases (LmdbFile, write_lmdb): what is written reads back as the files decode, a
// database written by Python's lmdb module in the documented layout opens as it should, the
// loader gives the same batches as over the same bytes in a packed cache, and bad databases are
// errors naming them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "frugal/data/image_loader.h"
#include "frugal/data/lmdb.h"
#include "frugal/data/packed.h"
#include "frugal/error.h"
#include "image_set.h"
#include "test_support.h"

namespace fs = std::filesystem;
using frugal::testing::error_message;
using frugal::testing::image_set;

namespace {

#define SKIP_WITHOUT_LMDB() \
  SKIP_WITHOUT_IMAGE_SET(); \
  if (!frugal::lmdb_available()) GTEST_SKIP() << "frugal was built without liblmdb"

bool have_python_lmdb() {
  return std::system("/usr/bin/python3 -c 'import lmdb' >/dev/null 2>&1") == 0;
}

std::string write(const std::string& name, frugal::PackOptions options = {}) {
  const std::string path = frugal::testing::temp_dir("lmdb_" + name) + "/" + name;
  frugal::ImageFolder folder(image_set());
  frugal::write_lmdb(path, folder.samples(), folder.classes(), folder.root(), options);
  return path;
}

// Writes `script` (Python, argv[1] = the database path) and runs it.
void python(const std::string& script, const std::string& db) {
  const std::string dir = frugal::testing::temp_dir("lmdb_py");
  std::ofstream(dir + "/make.py") << script;
  const std::string cmd = "/usr/bin/python3 " + dir + "/make.py " +
                          frugal::testing::shell_quote(db) + " " +
                          frugal::testing::shell_quote(image_set());
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

}  // namespace

TEST(Lmdb, WrittenDatabaseReadsBackAsTheFilesDecode) {
  SKIP_WITHOUT_LMDB();
  frugal::ImageFolder folder(image_set());
  const auto db = frugal::LmdbFile::open(write("images.lmdb"));
  ASSERT_EQ(db->size(), folder.size());
  EXPECT_EQ(db->classes(), folder.classes());
  for (int64_t i = 0; i < db->size(); ++i) {
    const frugal::ImageSample& s = folder.samples()[static_cast<size_t>(i)];
    EXPECT_EQ(db->label(i), s.label);
    EXPECT_EQ(db->sample_name(i), fs::path(s.path).lexically_relative(folder.root()).string());
    const frugal::Image original = frugal::read_image(s.path);
    const frugal::Image got = db->read(i, frugal::ColorMode::kRGB);
    ASSERT_EQ(got.height, original.height);
    ASSERT_EQ(got.width, original.width);
    if (frugal::testing::is_jpeg_file(s.path)) {
      EXPECT_EQ(got.pixels, original.pixels) << s.path;  // the JPEG bytes, kept
    }
  }
  EXPECT_EQ(db->read(3, frugal::ColorMode::kGray).channels, 1);
  EXPECT_EQ(frugal::LmdbFile::key(12), "00000012");
}

TEST(Lmdb, LoaderGivesThePackedCachesBatchesForTheSameBytes) {
  // write_lmdb and write_packed store the same bytes per sample (JPEGs kept, the rest encoded by
  // the same encoder): the loaders over both give identical batches, with any threads.
  SKIP_WITHOUT_LMDB();
  frugal::ImageFolder folder(image_set());
  const std::string cache = frugal::testing::temp_dir("lmdb") + "/same.fpk";
  frugal::write_packed(cache, folder.samples(), folder.classes(), folder.root());
  const auto options = frugal::ImageLoaderOptions(4).shuffle(true).seed(5);
  frugal::ImageLoader from_cache(frugal::PackedFile::open(cache), frugal::testing::augment(), 16,
                                 16, options);
  for (const int64_t threads : {1, 3}) {
    auto o = options;
    frugal::ImageLoader from_db(frugal::LmdbFile::open(write("same.lmdb")),
                                frugal::testing::augment(), 16, 16, o.threads(threads));
    frugal::testing::expect_same(frugal::testing::epoch(from_db, 2),
                                 frugal::testing::epoch(from_cache, 2));
  }
}

TEST(Lmdb, PythonWrittenDatabaseInTheDocumentedLayoutOpens) {
  // A user's database: written by Python's lmdb (Debian's python3-lmdb) as a folder with
  // data.mdb, keys 00000000.., values = int64 LE label + the file's bytes, no metadata key.
  SKIP_WITHOUT_LMDB();
  if (!have_python_lmdb()) GTEST_SKIP() << "needs Python's lmdb (python3-lmdb)";
  const std::string db = frugal::testing::temp_dir("lmdb") + "/from_python";
  python(R"PY(
import os, struct, sys, lmdb
db, root = sys.argv[1], sys.argv[2]
classes = sorted(d for d in os.listdir(root))
files = []
for label, c in enumerate(classes):
    for dirpath, _, names in sorted(os.walk(os.path.join(root, c))):
        files += [(os.path.join(dirpath, n), label) for n in sorted(names)]
env = lmdb.open(db, map_size=1 << 26)
with env.begin(write=True) as txn:
    for i, (path, label) in enumerate(files):
        txn.put(b"%08d" % i, struct.pack("<q", label) + open(path, "rb").read())
)PY",
         db);
  frugal::ImageFolder folder(image_set());
  const auto lmdb = frugal::LmdbFile::open(db);
  ASSERT_EQ(lmdb->size(), folder.size());
  EXPECT_EQ(lmdb->classes(), (std::vector<std::string>{"0", "1", "2"}));
  for (int64_t i = 0; i < lmdb->size(); ++i) {
    const std::string& path = folder.samples()[static_cast<size_t>(i)].path;
    EXPECT_EQ(lmdb->label(i), folder.samples()[static_cast<size_t>(i)].label);
    EXPECT_EQ(lmdb->sample_name(i), frugal::LmdbFile::key(i));
    EXPECT_EQ(lmdb->read(i, frugal::ColorMode::kRGB).pixels, frugal::read_image(path).pixels)
        << path;
  }
}

TEST(Lmdb, BadDatabasesAreErrorsNamingThem) {
  SKIP_WITHOUT_LMDB();
  const std::string dir = frugal::testing::temp_dir("lmdb_bad");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "no such file or folder",
                      error_message([&] { frugal::LmdbFile::open(dir + "/missing"); }));
  fs::create_directories(dir + "/empty_folder");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "without data.mdb",
                      error_message([&] { frugal::LmdbFile::open(dir + "/empty_folder"); }));
  frugal::testing::write_bytes(dir + "/junk.lmdb", std::vector<uint8_t>(20000, 7));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring,
                      "cannot open the LMDB database '" + dir + "/junk.lmdb'",
                      error_message([&] { frugal::LmdbFile::open(dir + "/junk.lmdb"); }));
  // A packed cache is not an LMDB database, nor the reverse.
  const std::string good = write("good.lmdb");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "not a frugal packed cache",
                      error_message([&] { frugal::PackedFile::open(good); }));
  frugal::PackOptions raw;
  raw.storage = frugal::PackedStorage::kRaw;
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "raw storage is for packed caches",
                      error_message([&] { write("raw.lmdb", raw); }));
  if (!have_python_lmdb()) return;
  // Databases damaged in ways LMDB itself accepts: each error names the database and the key.
  auto damaged = [&](const std::string& name, const std::string& edit) {
    const std::string db = dir + "/" + name;
    fs::copy_file(good, db, fs::copy_options::overwrite_existing);
    python(
        "import json, struct, sys, lmdb\nenv = lmdb.open(sys.argv[1], subdir=False, "
        "lock=False)\nwith env.begin(write=True) as txn:\n    " +
            edit + "\n",
        db);
    return error_message([&] {
      const auto d = frugal::LmdbFile::open(db);
      d->read(2, frugal::ColorMode::kRGB);
    });
  };
  std::string m = damaged("short.lmdb", "txn.put(b'00000002', b'\\x01')");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "the value of key '00000002' has 1 bytes", m);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, dir + "/short.lmdb", m);
  m = damaged("cut.lmdb", "txn.delete(b'00000026')");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "lists 27 samples but has no key '00000026'", m);
  m = damaged("json.lmdb", "txn.put(b'__frugal__', b'{not json')");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "key '__frugal__' is not valid", m);
  m = damaged("labels.lmdb",
              "m = json.loads(txn.get(b'__frugal__')); m['labels'][4] = 7; "
              "txn.put(b'__frugal__', json.dumps(m).encode())");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "label 7 of 3 classes", m);
  m = damaged("image.lmdb", "txn.put(b'00000002', struct.pack('<q', 1) + b'\\xff\\xd8\\xff junk')");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "cannot decode", m);
}

TEST(Lmdb, FrugalPackWritesLmdb) {
  SKIP_WITHOUT_LMDB();
  const std::string dir = frugal::testing::temp_dir("lmdb_tool");
  const auto run = frugal::testing::run_program(
      FRUGAL_PACK_TOOL,
      "--data " + frugal::testing::shell_quote(image_set()) + " --out " + dir +
          "/tool.lmdb --format lmdb --max-side 24 --quiet",
      dir, "pack");
  ASSERT_EQ(run.exit_code, 0) << run.describe();
  const auto db = frugal::LmdbFile::open(dir + "/tool.lmdb");
  EXPECT_EQ(db->size(), 27);
  for (int64_t i = 0; i < db->size(); ++i) {
    const frugal::Image image = db->read(i, frugal::ColorMode::kRGB);
    EXPECT_LE(std::max(image.height, image.width), 24);
  }
  const auto bad = frugal::testing::run_program(
      FRUGAL_PACK_TOOL, "--data " + image_set() + " --out x --format zip", dir, "bad");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "--format must be packed or lmdb", bad.err);
}
