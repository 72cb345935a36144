// The packed cache (write_packed, PackedFile, ImageLoader over a cache, frugal-pack): what is
// stored reads back as the source files decode (bitwise for raw pixels and for JPEGs kept as they
// were), the loader gives the folder loader's batches, block shuffles are permutations confined to
// their windows, and every kind of bad cache or bad input is an error naming it.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "frugal/data/image_loader.h"
#include "frugal/data/packed.h"
#include "frugal/error.h"
#include "image_set.h"
#include "test_support.h"

namespace fs = std::filesystem;
using frugal::testing::augment;
using frugal::testing::epoch;
using frugal::testing::error_message;
using frugal::testing::expect_same;
using frugal::testing::file_bytes;
using frugal::testing::image_set;
using frugal::testing::is_jpeg_file;
using frugal::testing::write_bytes;

namespace {

std::string pack(const std::string& name, frugal::PackOptions options = {}) {
  const std::string path = frugal::testing::temp_dir("packed_" + name) + "/" + name;
  frugal::ImageFolder folder(image_set());
  frugal::write_packed(path, folder.samples(), folder.classes(), folder.root(), options);
  return path;
}

frugal::PackOptions raw(int64_t max_side = 0) {
  frugal::PackOptions o;
  o.storage = frugal::PackedStorage::kRaw;
  o.max_side = max_side;
  return o;
}

}  // namespace

TEST(Packed, JpegCacheKeepsTheIndexAndJpegBytesAndReencodesTheRest) {
  SKIP_WITHOUT_IMAGE_SET();
  frugal::ImageFolder folder(image_set());
  const auto cache = frugal::PackedFile::open(pack("jpeg.fpk"));
  ASSERT_EQ(cache->size(), folder.size());
  EXPECT_EQ(cache->classes(), folder.classes());
  EXPECT_EQ(cache->storage(), frugal::PackedStorage::kJpeg);
  int64_t kept = 0;
  for (int64_t i = 0; i < cache->size(); ++i) {
    const frugal::ImageSample& s = folder.samples()[static_cast<size_t>(i)];
    EXPECT_EQ(cache->entry(i).label, s.label);
    EXPECT_EQ(cache->paths()[static_cast<size_t>(i)],
              fs::path(s.path).lexically_relative(folder.root()).string());
    const frugal::Image original = frugal::read_image(s.path);
    const frugal::Image got = cache->read(i, frugal::ColorMode::kRGB);
    ASSERT_EQ(got.height, original.height);
    ASSERT_EQ(got.width, original.width);
    if (is_jpeg_file(s.path)) {
      // Kept byte for byte: the same pixels as the file.
      const auto [p, n] = cache->bytes(i);
      EXPECT_EQ(std::vector<uint8_t>(p, p + n), file_bytes(s.path)) << s.path;
      EXPECT_EQ(got.pixels, original.pixels) << s.path;
      ++kept;
    } else {
      // Re-encoded as JPEG at quality 90: close, not equal (the grain, sigma 6, mean |grain| 4.8,
      // is what JPEG drops first).
      const auto [p, n] = cache->bytes(i);
      EXPECT_EQ(frugal::detect_image_format(p, n), frugal::ImageFormat::kJpeg);
      double diff = 0;
      for (size_t k = 0; k < got.pixels.size(); ++k) {
        diff += std::abs(int(got.pixels[k]) - int(original.pixels[k]));
      }
      EXPECT_LT(diff / got.pixels.size(), 6.0) << s.path;
    }
    // Grayscale reads convert as PIL's convert("L") of the stored image.
    const frugal::Image gray = cache->read(i, frugal::ColorMode::kGray);
    EXPECT_EQ(gray.channels, 1);
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, cache->size());
}

TEST(Packed, RawCacheIsExactlyTheDecodedPixels) {
  SKIP_WITHOUT_IMAGE_SET();
  frugal::ImageFolder folder(image_set());
  const auto cache = frugal::PackedFile::open(pack("raw.fpk", raw()));
  ASSERT_EQ(cache->size(), folder.size());
  for (int64_t i = 0; i < cache->size(); ++i) {
    const std::string& path = folder.samples()[static_cast<size_t>(i)].path;
    EXPECT_EQ(cache->read(i, frugal::ColorMode::kRGB).pixels, frugal::read_image(path).pixels)
        << path;
    EXPECT_EQ(cache->read(i, frugal::ColorMode::kGray).pixels,
              frugal::read_image(path, frugal::ColorMode::kGray).pixels)
        << path;
  }
  // A grayscale raw cache: one channel stored, replicated when read as RGB.
  frugal::PackOptions gray = raw();
  gray.color = frugal::ColorMode::kGray;
  const auto g = frugal::PackedFile::open(pack("gray.fpk", gray));
  for (int64_t i = 0; i < g->size(); ++i) {
    const std::string& path = folder.samples()[static_cast<size_t>(i)].path;
    const frugal::Image l = frugal::read_image(path, frugal::ColorMode::kGray);
    EXPECT_EQ(g->entry(i).channels, 1);
    EXPECT_EQ(g->read(i, frugal::ColorMode::kGray).pixels, l.pixels);
    const frugal::Image rgb = g->read(i, frugal::ColorMode::kRGB);
    ASSERT_EQ(rgb.pixels.size(), 3 * l.pixels.size());
    EXPECT_EQ(rgb.pixels[3 * 7 + 2], l.pixels[7]);
  }
}

TEST(Packed, MaxSideShrinksWithTheAntialiasedResizeKeepingAspect) {
  SKIP_WITHOUT_IMAGE_SET();
  frugal::ImageFolder folder(image_set());
  const auto cache = frugal::PackedFile::open(pack("small.fpk", raw(32)));
  int64_t shrunk = 0;
  for (int64_t i = 0; i < cache->size(); ++i) {
    const frugal::Image original =
        frugal::read_image(folder.samples()[static_cast<size_t>(i)].path);
    const int64_t longer = std::max(original.height, original.width);
    frugal::Image expected = original;
    if (longer > 32) {
      const int64_t h = std::llround(original.height * 32.0 / longer);
      const int64_t w = std::llround(original.width * 32.0 / longer);
      expected = frugal::resize_bilinear(original, {0, 0, original.height, original.width}, h, w);
      ++shrunk;
    }
    const frugal::Image got = cache->read(i, frugal::ColorMode::kRGB);
    EXPECT_EQ(got.height, expected.height);
    EXPECT_EQ(got.width, expected.width);
    EXPECT_EQ(got.pixels, expected.pixels);
    EXPECT_LE(std::max(got.height, got.width), 32);
  }
  EXPECT_GT(shrunk, 5);
  EXPECT_EQ(cache->max_side(), 32);
}

TEST(Packed, LoaderOverTheCacheGivesTheFolderLoadersBatches) {
  SKIP_WITHOUT_IMAGE_SET();
  frugal::ImageFolder folder(image_set());
  const auto cache = frugal::PackedFile::open(pack("loader.fpk", raw()));
  auto options = frugal::ImageLoaderOptions(4).shuffle(true).seed(3);
  frugal::ImageLoader from_files(folder.samples(), augment(), 16, 16, options.threads(1));
  for (const int64_t threads : {1, 2, 4}) {
    frugal::ImageLoader from_cache(cache, augment(), 16, 16, options.threads(threads));
    expect_same(epoch(from_cache, 1), epoch(from_files, 1));
  }
  // Exact mid-epoch resume, and a subset in the order given.
  frugal::ImageLoader from_cache(cache, augment(), 16, 16, options.threads(2));
  const auto full = epoch(from_cache, 2);
  const auto resumed = epoch(from_cache, 2, 3);
  expect_same(resumed, std::vector<frugal::Batch>(full.begin() + 3, full.end()));
  frugal::ImageLoader subset(cache, std::make_shared<frugal::Resize>(16, 16), 16, 16,
                             frugal::ImageLoaderOptions(2).threads(1), {5, 0, 7});
  const auto batches = epoch(subset, 0);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].target[0].item<int64_t>(), cache->entry(5).label);
  EXPECT_EQ(batches[1].target[0].item<int64_t>(), cache->entry(7).label);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "subset index 99", error_message([&] {
                        frugal::ImageLoader(cache, augment(), 16, 16, {}, {1, 99});
                      }));
}

TEST(Packed, BlockShuffleIsAPermutationConfinedToItsWindows) {
  SKIP_WITHOUT_IMAGE_SET();
  const auto cache = frugal::PackedFile::open(pack("blocks.fpk", raw(16)));
  const int64_t n = cache->size();  // 27
  const int64_t block = 4, window = 2;
  auto options =
      frugal::ImageLoaderOptions(5).shuffle(true).seed(9).shuffle_block(block).shuffle_window(
          window);
  frugal::ImageLoader loader(cache, std::make_shared<frugal::Resize>(8, 8), 8, 8,
                             options.threads(1));
  const std::vector<int64_t> order = loader.epoch_indices(0);
  ASSERT_EQ(static_cast<int64_t>(order.size()), n);
  EXPECT_EQ(std::set<int64_t>(order.begin(), order.end()).size(), static_cast<size_t>(n));
  // Each window's stretch of the order draws on at most `window` blocks, and is not in file order.
  int64_t pos = 0, unsorted = 0;
  while (pos < n) {
    std::set<int64_t> blocks;
    int64_t len = 0;
    while (pos + len < n && (blocks.size() < static_cast<size_t>(window) ||
                             blocks.count(order[pos + len] / block))) {
      blocks.insert(order[pos + len] / block);
      ++len;
    }
    EXPECT_LE(blocks.size(), static_cast<size_t>(window));
    if (!std::is_sorted(order.begin() + pos, order.begin() + pos + len)) ++unsorted;
    pos += len;
  }
  EXPECT_GT(unsorted, 0);
  EXPECT_EQ(loader.epoch_indices(0), order);
  EXPECT_NE(loader.epoch_indices(1), order);
  // Not the full shuffle's order.
  frugal::ImageLoader full(cache, std::make_shared<frugal::Resize>(8, 8), 8, 8,
                           options.shuffle_block(0).threads(1));
  EXPECT_NE(full.epoch_indices(0), order);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "shuffle_block must be >= 0", error_message([&] {
                        frugal::ImageLoader(cache, augment(), 16, 16, options.shuffle_block(-1));
                      }));
}

TEST(Packed, DamagedForeignAndTruncatedCachesAreErrorsNamingTheFile) {
  SKIP_WITHOUT_IMAGE_SET();
  const std::string good = pack("good.fpk", raw(24));
  const std::vector<uint8_t> bytes = file_bytes(good);
  const std::string dir = frugal::testing::temp_dir("packed_bad");
  auto open_error = [&](const std::vector<uint8_t>& b, const std::string& name) {
    const std::string path = dir + "/" + name;
    write_bytes(path, b);
    const std::string message = error_message([&] { frugal::PackedFile::open(path); });
    EXPECT_PRED_FORMAT2(::testing::IsSubstring, path, message);
    return message;
  };
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "No such file",
                      error_message([&] { frugal::PackedFile::open(dir + "/missing.fpk"); }));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "too short",
                      open_error({'h', 'e', 'l', 'l', 'o'}, "short.fpk"));
  std::vector<uint8_t> foreign(bytes.size(), 0x42);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "not a frugal packed cache",
                      open_error(foreign, "foreign.fpk"));
  std::vector<uint8_t> cut(bytes.begin(), bytes.end() - 1000);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "truncated", open_error(cut, "cut.fpk"));
  std::vector<uint8_t> longer = bytes;
  longer.insert(longer.end() - 128, 7, 0);  // bytes inserted before the trailer
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "its trailer says", open_error(longer, "long.fpk"));
  std::vector<uint8_t> version = bytes;
  version[8] = 9;
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "format version 9",
                      open_error(version, "version.fpk"));
  std::vector<uint8_t> trailer = bytes;
  trailer[bytes.size() - 128 + 30] ^= 1;  // the sample count
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "trailer fails its checksum",
                      open_error(trailer, "trailer.fpk"));
  const auto cache = frugal::PackedFile::open(good);
  uint64_t table_offset = 0;
  std::memcpy(&table_offset, bytes.data() + bytes.size() - 128 + 40, 8);
  std::vector<uint8_t> table = bytes;
  table[table_offset + 40 * 3 + 16] ^= 1;  // sample 3's label
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "sample table fails its checksum",
                      open_error(table, "table.fpk"));

  // A damaged sample opens (the table is intact) and fails when read, naming it.
  std::vector<uint8_t> sample = bytes;
  sample[cache->entry(4).offset + 10] ^= 0x10;
  const std::string damaged = dir + "/sample.fpk";
  write_bytes(damaged, sample);
  const auto d = frugal::PackedFile::open(damaged);
  const std::string message = error_message([&] { d->read(4, frugal::ColorMode::kRGB); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "sample 4 ('" + d->paths()[4] + "')", message);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "fails its checksum", message);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "fails its checksum",
                      error_message([&] { d->verify(); }));
  EXPECT_EQ(error_message([&] { cache->verify(); }), "no error");
  // Through a loader: raised by default, or substituted and counted.
  frugal::ImageLoader raise(d, std::make_shared<frugal::Resize>(8, 8), 8, 8,
                            frugal::ImageLoaderOptions(3).threads(1));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "fails its checksum",
                      error_message([&] { epoch(raise, 0); }));
  frugal::ImageLoader skip(
      d, std::make_shared<frugal::Resize>(8, 8), 8, 8,
      frugal::ImageLoaderOptions(3).threads(1).on_bad_sample(frugal::OnBadSample::kSkip));
  EXPECT_EQ(epoch(skip, 0).size(), 9u);
  EXPECT_EQ(skip.bad_samples(), 1);
}

TEST(Packed, CacheReplacedOrCutUnderARunningLoader) {
  SKIP_WITHOUT_IMAGE_SET();
  frugal::ImageFolder folder(image_set());
  const std::string path = pack("replaced.fpk", raw(20));
  const auto reference = [&] {
    frugal::ImageLoader loader(frugal::PackedFile::open(path), augment(), 16, 16,
                               frugal::ImageLoaderOptions(3).shuffle(true).threads(1));
    return epoch(loader, 0);
  }();
  // Replaced by frugal-pack (a new file renamed over it): the running loader keeps its mapping
  // of the old file and delivers exactly the old batches.
  {
    frugal::ImageLoader loader(frugal::PackedFile::open(path), augment(), 16, 16,
                               frugal::ImageLoaderOptions(3).shuffle(true).threads(2));
    loader.start_epoch(0);
    std::vector<frugal::Batch> got{*loader.next()};
    frugal::write_packed(path, folder.samples(), folder.classes(), folder.root(), raw(30));
    while (auto b = loader.next()) got.push_back(*b);
    expect_same(got, reference);
  }
  // Cut in place (cp over it, a full disk): an error naming the file, not a SIGBUS.
  const auto cache = frugal::PackedFile::open(path);
  fs::resize_file(path, 5000);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "shrank from", error_message([&] {
                        cache->read(cache->size() - 1, frugal::ColorMode::kRGB);
                      }));
}

TEST(Packed, BadInputToTheWriterIsAnErrorAndLeavesNoFile) {
  SKIP_WITHOUT_IMAGE_SET();
  frugal::ImageFolder folder(image_set());
  const std::string dir = frugal::testing::temp_dir("packed_write");
  const std::string out = dir + "/out.fpk";
  auto write = [&](std::vector<frugal::ImageSample> samples, frugal::PackOptions o) {
    return error_message(
        [&] { frugal::write_packed(out, samples, folder.classes(), folder.root(), o); });
  };
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "no samples", write({}, {}));
  auto labelled = folder.samples();
  labelled[2].label = 3;
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "has label 3, expected [0, 3)", write(labelled, {}));
  frugal::PackOptions q;
  q.quality = 0;
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "quality must be in [1, 100]",
                      write(folder.samples(), q));
  frugal::PackOptions gray;
  gray.color = frugal::ColorMode::kGray;
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "needs raw storage", write(folder.samples(), gray));
  // A torn file: named, and no cache left behind; with skip_bad, left out and listed.
  auto samples = folder.samples();
  const std::string torn = dir + "/torn.jpg";
  const std::vector<uint8_t> b = file_bytes(samples[0].path);
  write_bytes(torn, std::vector<uint8_t>(b.begin(), b.begin() + b.size() / 2));
  samples[3].path = torn;
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, torn, write(samples, raw()));
  EXPECT_FALSE(fs::exists(out));
  for (const auto& entry : fs::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
  }
  frugal::PackOptions skip = raw();
  skip.skip_bad = true;
  const frugal::PackResult r =
      frugal::write_packed(out, samples, folder.classes(), folder.root(), skip);
  EXPECT_EQ(r.samples, folder.size() - 1);
  ASSERT_EQ(r.skipped.size(), 1u);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, torn, r.skipped[0]);
  EXPECT_EQ(frugal::PackedFile::open(out)->size(), folder.size() - 1);
}

TEST(Packed, FrugalPackToolPacksPrintsVerifiesAndRefuses) {
  SKIP_WITHOUT_IMAGE_SET();
  const std::string dir = frugal::testing::temp_dir("packed_tool");
  const std::string tool = FRUGAL_PACK_TOOL;
  const std::string out = dir + "/tool.fpk";
  auto run = [&](const std::string& args, const std::string& name) {
    return frugal::testing::run_program(tool, args, dir, name);
  };
  const auto packed = run("--data " + frugal::testing::shell_quote(image_set()) + " --out " + out +
                              " --storage raw --max-side 24 --threads 2",
                          "pack");
  ASSERT_EQ(packed.exit_code, 0) << packed.describe();
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "27 samples", packed.out);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "packing 27/27 images (100%)", packed.err);
  const auto cache = frugal::PackedFile::open(out);
  EXPECT_EQ(cache->max_side(), 24);
  EXPECT_EQ(cache->storage(), frugal::PackedStorage::kRaw);
  const auto info = run("--info " + out, "info");
  EXPECT_EQ(info.exit_code, 0) << info.describe();
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "class\t2\tclass2\t10 samples", info.out);
  const auto verify = run("--verify " + out, "verify");
  EXPECT_EQ(verify.exit_code, 0) << verify.describe();
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "every checksum matches", verify.out);
  std::vector<uint8_t> bytes = file_bytes(out);
  bytes[cache->entry(26).offset] ^= 1;
  write_bytes(dir + "/bad.fpk", bytes);
  const auto bad = run("--verify " + dir + "/bad.fpk", "bad");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "sample 26", bad.err);
  const auto storage = run("--data " + image_set() + " --out " + out + " --storage png", "storage");
  EXPECT_EQ(storage.exit_code, 1);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "--storage must be jpeg or raw", storage.err);
  const auto none = run("--out " + out, "none");
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "give --data DIR", none.err);
}
