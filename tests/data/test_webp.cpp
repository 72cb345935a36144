// WebP decoding (libwebp) against PIL's Image.open(p).convert("RGB") / convert("L") of files PIL
// wrote: lossless and lossy, with and without alpha (dropped without compositing), odd sizes.
// Debian's PIL decodes with the same libwebp 1.2, so lossy files are compared exactly too. An
// animated, truncated or damaged file is an error naming it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
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
rng = np.random.default_rng(13)

def picture(h, w):
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), ((x + y) * 3) % 256], -1)
    return np.clip(base + rng.integers(0, 60, (h, w, 3)), 0, 255).astype(np.uint8)

rgb = Image.fromarray(picture(67, 91))
alpha = Image.fromarray(rng.integers(0, 256, (67, 91), dtype=np.uint8))
rgba = rgb.copy()
rgba.putalpha(alpha)
files = {
    "lossless.webp": (rgb, dict(lossless=True)),
    "lossless_alpha.webp": (rgba, dict(lossless=True, exact=True)),  # keep RGB under alpha 0
    "lossy.webp": (Image.fromarray(picture(101, 77)), dict(quality=80)),
    "lossy_alpha.webp": (rgba, dict(quality=75)),
    "gray.webp": (Image.fromarray(picture(33, 48)).convert("L"), dict(quality=90)),
    "one_pixel.webp": (Image.fromarray(picture(1, 1)), dict(lossless=True)),
}
with open(os.path.join(out, "files.txt"), "w") as f:
    for name, (im, kw) in files.items():
        im.save(os.path.join(out, name), "WEBP", **kw)
        back = Image.open(os.path.join(out, name))
        for mode in ("RGB", "L"):
            c = back.convert(mode)
            open(os.path.join(out, f"{name}.{mode}"), "wb").write(c.tobytes())
        f.write(f"{name} {back.size[1]} {back.size[0]}\n")
# Lossless keeps the pixels: PIL's own reading of them must equal the source, alpha dropped.
assert Image.open(os.path.join(out, "lossless_alpha.webp")).convert("RGB").tobytes() == rgb.tobytes()
rgb.save(os.path.join(out, "animated.webp"), "WEBP", save_all=True, append_images=[rgb.rotate(90)], lossless=True)
data = open(os.path.join(out, "lossy.webp"), "rb").read()
open(os.path.join(out, "truncated.webp"), "wb").write(data[: len(data) // 2])
damaged = bytearray(data)
damaged[40:60] = b"\xff" * 20
open(os.path.join(out, "damaged.webp"), "wb").write(bytes(damaged))
)PY";

bool have_pil_webp() {
  return frugal::testing::python_can(
      "from PIL import features; import numpy; assert features.check(\"webp\")");
}

const std::string& files_dir() {
  static const std::string dir = frugal::testing::run_python_script("webp", kMakeFiles);
  return dir;
}

#define SKIP_WITHOUT_WEBP()                                                                   \
  if (!frugal::image_format_supported(frugal::ImageFormat::kWebp)) {                          \
    GTEST_SKIP() << "frugal was built without libwebp (libwebp-dev)";                         \
  }                                                                                           \
  if (!have_pil_webp()) {                                                                     \
    GTEST_SKIP() << "needs /usr/bin/python3 with PIL (WebP support) and numpy (python3-pil)"; \
  }

}  // namespace

TEST(WebP, PixelsEqualPilConvert) {
  SKIP_WITHOUT_WEBP();
  std::ifstream in(files_dir() + "/files.txt");
  std::string name;
  int64_t h, w;
  int count = 0;
  for (; in >> name >> h >> w; ++count) {
    const std::string path = files_dir() + "/" + name;
    for (const auto& [mode, suffix] :
         {std::pair{frugal::ColorMode::kRGB, "RGB"}, std::pair{frugal::ColorMode::kGray, "L"}}) {
      const frugal::Image image = frugal::read_image(path, mode);
      EXPECT_EQ(image.height, h) << name;
      EXPECT_EQ(image.width, w) << name;
      EXPECT_EQ(image.channels, mode == frugal::ColorMode::kRGB ? 3 : 1) << name;
      const std::string pil = slurp(path + "." + suffix);
      ASSERT_EQ(image.pixels.size(), pil.size()) << name << " " << suffix;
      int64_t differ = 0;
      for (size_t k = 0; k < pil.size(); ++k) {
        differ += image.pixels[k] != static_cast<uint8_t>(pil[k]);
      }
      EXPECT_EQ(differ, 0) << name << " " << suffix;
    }
  }
  EXPECT_EQ(count, 6);
}

TEST(WebP, AnimatedTruncatedAndDamagedFilesAreErrorsNamingThem) {
  SKIP_WITHOUT_WEBP();
  const std::pair<const char*, const char*> cases[] = {
      {"animated.webp", "animated WebP is not supported"},
      {"truncated.webp", "(WebP): "},
      {"damaged.webp", "(WebP): "},
  };
  for (const auto& [file, expected] : cases) {
    const std::string path = files_dir() + "/" + file;
    const std::string e = frugal::testing::error_message([&] { frugal::read_image(path); });
    EXPECT_NE(e.find("cannot decode '" + path + "'"), std::string::npos) << e;
    EXPECT_NE(e.find(expected), std::string::npos) << e;
  }
  const std::string e =
      frugal::testing::error_message([&] { frugal::read_image(files_dir() + "/truncated.webp"); });
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
}
