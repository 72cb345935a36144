// decode_jpeg_region: inside the box, the pixels of a full decode (every chroma subsampling,
// grey, CMYK, progressive, restart markers, odd sizes, boxes at every edge), at full scale and at
// each DCT scale n/8; the scaled decodes equal PIL's Image.draft; jpeg_size and jpeg_scaled_size
// equal PIL's sizes; bad boxes, non-JPEGs and truncated files are errors naming the file.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "frugal/data/image.h"
#include "frugal/error.h"
#include "python_oracle.h"
#include "test_support.h"

namespace {

using frugal::testing::slurp;

const char* kMakeFiles = R"PY(
import os, sys
import numpy as np
from PIL import Image
out = sys.argv[1]
rng = np.random.default_rng(5)

def picture(h, w):
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), ((x + y) * 3) % 256], -1)
    return np.clip(base + rng.integers(0, 70, (h, w, 3)), 0, 255).astype(np.uint8)

files = []
def save(name, im, **kw):
    im.save(os.path.join(out, name), "JPEG", **kw)
    files.append(name)
save("s420.jpg", Image.fromarray(picture(375, 500)), quality=90)
save("s420_odd.jpg", Image.fromarray(picture(333, 257)), quality=85)
save("s422.jpg", Image.fromarray(picture(301, 419)), quality=90, subsampling=1)
save("s444.jpg", Image.fromarray(picture(250, 331)), quality=95, subsampling=0)
save("gray.jpg", Image.fromarray(picture(277, 203)).convert("L"), quality=90)
save("cmyk.jpg", Image.fromarray(picture(150, 211)).convert("CMYK"), quality=90)
save("progressive.jpg", Image.fromarray(picture(263, 345)), quality=90, progressive=True)
save("restart.jpg", Image.fromarray(picture(200, 300)), quality=90, restart_marker_blocks=3)
save("tiny.jpg", Image.fromarray(picture(5, 3)), quality=90)
with open(os.path.join(out, "files.txt"), "w") as f:
    for name in files:
        im = Image.open(os.path.join(out, name))
        f.write(f"{name} {im.size[1]} {im.size[0]}\n")
        # PIL's draft: scale 1/k decodes with libjpeg's scale_num/scale_denom = 1/k.
        for k in ((2, 4, 8) if name != "tiny.jpg" else ()):  # draft needs >= 8 pixels a side
            im = Image.open(os.path.join(out, name))
            im.draft(im.mode, (im.size[0] // k, im.size[1] // k))
            im = im.convert("RGB")
            open(os.path.join(out, f"{name}.draft{k}"), "wb").write(im.tobytes())
            open(os.path.join(out, f"{name}.draft{k}.size"), "w").write(f"{im.size[1]} {im.size[0]}")
data = open(os.path.join(out, "s420.jpg"), "rb").read()
open(os.path.join(out, "trailing.jpg"), "wb").write(data + b"\0" * 100)
open(os.path.join(out, "truncated.jpg"), "wb").write(data[: len(data) * 7 // 10])
Image.fromarray(picture(10, 10)).save(os.path.join(out, "picture.png"))
)PY";

bool have_pil() { return frugal::testing::python_can("import PIL, numpy"); }

const std::string& files_dir() {
  static const std::string dir = frugal::testing::run_python_script("jpeg_region", kMakeFiles);
  return dir;
}

#define SKIP_WITHOUT_PIL() \
  if (!have_pil()) GTEST_SKIP() << "needs /usr/bin/python3 with PIL and numpy (python3-pil)";

struct File {
  std::string name;
  int64_t height, width;
  std::string bytes;
  const uint8_t* data() const { return reinterpret_cast<const uint8_t*>(bytes.data()); }
};

std::vector<File> files() {
  std::vector<File> out;
  std::ifstream in(files_dir() + "/files.txt");
  File f;
  while (in >> f.name >> f.height >> f.width) {
    f.bytes = slurp(files_dir() + "/" + f.name);
    out.push_back(f);
  }
  EXPECT_EQ(out.size(), 9u);
  return out;
}

// Pixels of `box` (in `full`'s coordinates) that differ between `region` and `full`.
int64_t differing(const frugal::ImageRegion& region, const frugal::Image& full,
                  const frugal::CropBox& box) {
  const frugal::Image& r = region.image;
  EXPECT_LE(region.top, box.top);
  EXPECT_LE(region.left, box.left);
  EXPECT_GE(region.top + r.height, box.top + box.height);
  EXPECT_GE(region.left + r.width, box.left + box.width);
  if (r.channels != full.channels || region.top > box.top || region.left > box.left ||
      region.top + r.height < box.top + box.height ||
      region.left + r.width < box.left + box.width) {
    return -1;
  }
  int64_t n = 0;
  const int64_t c = full.channels;
  for (int64_t y = box.top; y < box.top + box.height; ++y) {
    for (int64_t x = box.left * c; x < (box.left + box.width) * c; ++x) {
      n += full.pixels[y * full.width * c + x] !=
           r.pixels[(y - region.top) * r.width * c + x - region.left * c];
    }
  }
  return n;
}

// Boxes at the corners and edges, the whole image, single pixels, and random ones.
std::vector<frugal::CropBox> boxes(int64_t h, int64_t w, uint32_t seed) {
  std::vector<frugal::CropBox> out = {{0, 0, h, w},
                                      {0, 0, 1, 1},
                                      {h - 1, w - 1, 1, 1},
                                      {0, w / 2, h, w - w / 2},
                                      {h / 3, 0, h - h / 3, std::max<int64_t>(1, w / 3)}};
  std::mt19937 gen(seed);
  for (int k = 0; k < 40; ++k) {
    const int64_t top = gen() % h, left = gen() % w;
    out.push_back({top, left, 1 + int64_t(gen() % (h - top)), 1 + int64_t(gen() % (w - left))});
  }
  return out;
}

}  // namespace

TEST(JpegRegion, BoxPixelsEqualAFullDecodeAtEveryScale) {
  SKIP_WITHOUT_PIL();
  for (const File& f : files()) {
    for (auto mode : {frugal::ColorMode::kRGB, frugal::ColorMode::kGray}) {
      for (int n = 8; n >= 1; --n) {
        const frugal::ImageSize size = frugal::jpeg_scaled_size({f.height, f.width}, n);
        const frugal::Image full =
            frugal::decode_jpeg_region(f.data(), f.bytes.size(), mode, f.name,
                                       {0, 0, size.height, size.width}, n)
                .image;
        ASSERT_EQ(full.height, size.height) << f.name << " at " << n << "/8";
        ASSERT_EQ(full.width, size.width) << f.name << " at " << n << "/8";
        if (n == 8) {
          const frugal::Image whole = frugal::decode_image(f.data(), f.bytes.size(), mode, f.name);
          ASSERT_EQ(full.pixels, whole.pixels) << f.name;
        }
        for (const frugal::CropBox& box : boxes(size.height, size.width, n)) {
          const frugal::ImageRegion region =
              frugal::decode_jpeg_region(f.data(), f.bytes.size(), mode, f.name, box, n);
          EXPECT_EQ(differing(region, full, box), 0)
              << f.name << " at " << n << "/8, box (" << box.top << ", " << box.left << ", "
              << box.height << "x" << box.width << "), mode " << int(mode);
        }
      }
    }
  }
}

TEST(JpegRegion, ScaledDecodesEqualPilsDraft) {
  SKIP_WITHOUT_PIL();
  for (const File& f : files()) {
    if (f.name == "tiny.jpg") continue;  // PIL's draft needs 8 pixels a side
    for (int k : {2, 4, 8}) {
      const std::string ref = files_dir() + "/" + f.name + ".draft" + std::to_string(k);
      std::ifstream size_in(ref + ".size");
      int64_t h = 0, w = 0;
      size_in >> h >> w;
      const frugal::ImageSize size = frugal::jpeg_scaled_size({f.height, f.width}, 8 / k);
      EXPECT_EQ(size.height, h) << f.name << " 1/" << k;
      EXPECT_EQ(size.width, w) << f.name << " 1/" << k;
      const frugal::Image image =
          frugal::decode_jpeg_region(f.data(), f.bytes.size(), frugal::ColorMode::kRGB, f.name,
                                     {0, 0, size.height, size.width}, 8 / k)
              .image;
      const std::string pil = slurp(ref);
      ASSERT_EQ(image.pixels.size(), pil.size()) << f.name << " 1/" << k;
      EXPECT_EQ(0, std::memcmp(image.pixels.data(), pil.data(), pil.size()))
          << f.name << " 1/" << k;
    }
  }
}

TEST(JpegRegion, SizeIsPilsWithoutDecoding) {
  SKIP_WITHOUT_PIL();
  for (const File& f : files()) {
    const frugal::ImageSize size = frugal::jpeg_size(f.data(), f.bytes.size(), f.name);
    EXPECT_EQ(size.height, f.height) << f.name;
    EXPECT_EQ(size.width, f.width) << f.name;
  }
}

TEST(JpegRegion, TrailingBytesAreFineAndTruncationIsAnErrorWhereverTheBoxIs) {
  SKIP_WITHOUT_PIL();
  const std::string dir = files_dir();
  const std::string good = slurp(dir + "/s420.jpg"), trailing = slurp(dir + "/trailing.jpg");
  const std::string truncated = slurp(dir + "/truncated.jpg");
  auto bytes = [](const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); };
  const frugal::CropBox top_box{3, 40, 50, 60};
  const frugal::ImageRegion a = frugal::decode_jpeg_region(
      bytes(good), good.size(), frugal::ColorMode::kRGB, "good.jpg", top_box);
  const frugal::ImageRegion b = frugal::decode_jpeg_region(
      bytes(trailing), trailing.size(), frugal::ColorMode::kRGB, "trailing.jpg", top_box);
  EXPECT_EQ(a.image.pixels, b.image.pixels);
  // The file is cut at 70%, far below the box: still refused, as decode_image refuses it.
  const std::string error = frugal::testing::error_message([&] {
    frugal::decode_jpeg_region(bytes(truncated), truncated.size(), frugal::ColorMode::kRGB,
                               "cut.jpg", top_box);
  });
  EXPECT_NE(error.find("'cut.jpg'"), std::string::npos) << error;
  EXPECT_NE(error.find("truncated"), std::string::npos) << error;
}

TEST(JpegRegion, BadBoxesScalesAndFilesAreErrorsNamingTheFile) {
  SKIP_WITHOUT_PIL();
  const std::string dir = files_dir();
  const std::string jpeg = slurp(dir + "/s420.jpg"), png = slurp(dir + "/picture.png");
  auto bytes = [](const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); };
  auto region_error = [&](const std::string& file, frugal::CropBox box, int n) {
    return frugal::testing::error_message([&] {
      frugal::decode_jpeg_region(bytes(file), file.size(), frugal::ColorMode::kRGB, "f.jpg", box,
                                 n);
    });
  };
  std::string e = region_error(jpeg, {300, 0, 100, 10}, 8);
  EXPECT_NE(e.find("'f.jpg'"), std::string::npos) << e;
  EXPECT_NE(e.find("is not inside the 375x500 image"), std::string::npos) << e;
  e = region_error(jpeg, {0, 0, 100, 100}, 1);  // 375x500 at 1/8 is 47x63
  EXPECT_NE(e.find("is not inside the 47x63 image (at scale 1/8)"), std::string::npos) << e;
  e = region_error(jpeg, {0, 0, 1, 1}, 9);
  EXPECT_NE(e.find("scale_eighths must be in [1, 8], got 9"), std::string::npos) << e;
  e = region_error(png, {0, 0, 1, 1}, 8);
  EXPECT_NE(e.find("'f.jpg' as a JPEG: it is PNG"), std::string::npos) << e;
  e = frugal::testing::error_message([&] { frugal::jpeg_size(bytes(jpeg), 100, "short.jpg"); });
  EXPECT_NE(e.find("'short.jpg'"), std::string::npos) << e;
  e = frugal::testing::error_message([&] { frugal::jpeg_size(bytes(jpeg), 0, "empty.jpg"); });
  EXPECT_NE(e.find("'empty.jpg': the file is empty"), std::string::npos) << e;
}
