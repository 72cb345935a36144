// The fixed-point bilinear resampler (detail::resample_bilinear, behind resize_bilinear,
// RandomResizedCrop and Resize) against PIL on many crop boxes and sizes: downscales up to 12x
// (wide filters), upscales, one-pixel boxes, boxes whose width or height is kept (PIL skips that
// pass), 1 and 3 channels (2 and 4: PIL band by band, as PIL premultiplies alpha), and fractional
// boxes (PIL's resize(box=...)).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "frugal/data/transforms.h"
#include "python_oracle.h"
#include "test_support.h"

namespace {

using frugal::testing::slurp;

const char* kReference = R"PY(
import sys, os
import numpy as np
from PIL import Image
out = sys.argv[1]
rng = np.random.default_rng(21)
modes = {1: "L", 3: "RGB"}
H, W = 301, 257
with open(os.path.join(out, "cases.txt"), "w") as f:
    k = 0
    for c in (1, 2, 3, 4):
        a = rng.integers(0, 256, (H, W, c), dtype=np.uint8)
        open(os.path.join(out, f"src{c}.raw"), "wb").write(a.tobytes())
        im = Image.fromarray(a[:, :, 0] if c == 1 else a, modes[c]) if c in modes else None
        boxes = [(0, 0, H, W, 224, 224), (0, 0, H, W, 25, 21), (10, 3, 1, 1, 3, 5),
                 (0, 0, H, W, H, 100), (5, 7, 200, 180, 200, 64), (5, 7, 200, 180, 31, 180),
                 (0, 0, H, W, H, W), (100, 100, 7, 9, 224, 224)]
        for _ in range(12):
            t, l = int(rng.integers(0, H - 1)), int(rng.integers(0, W - 1))
            h, w = int(rng.integers(1, H - t + 1)), int(rng.integers(1, W - l + 1))
            boxes.append((t, l, h, w, int(rng.integers(1, 300)), int(rng.integers(1, 300))))
        for (t, l, h, w, oh, ow) in boxes:
            if c in (1, 3):
                r = im.crop((l, t, l + w, t + h)).resize((ow, oh), Image.BILINEAR).tobytes()
            else:  # PIL premultiplies alpha: band by band, as frugal treats every channel
                bands = [np.asarray(Image.fromarray(np.ascontiguousarray(a[:, :, b]), "L").crop((l, t, l + w, t + h)).resize((ow, oh), Image.BILINEAR)) for b in range(c)]
                r = np.stack(bands, -1).tobytes()
            open(os.path.join(out, f"out{k}.raw"), "wb").write(r)
            f.write(f"{c} {t} {l} {h} {w} {oh} {ow}\n")
            k += 1
# Fractional boxes: PIL's resize(size, box=(left, top, right, bottom)) on the whole image.
with open(os.path.join(out, "fractional.txt"), "w") as f:
    im = Image.fromarray(np.frombuffer(open(os.path.join(out, "src3.raw"), "rb").read(), np.uint8).reshape(H, W, 3), "RGB")
    for k in range(10):
        # Pillow's _resize parses the box as C floats: float32 values, exact in both.
        f32 = lambda v: float(np.float32(v))
        l, t = f32(rng.uniform(0, W / 2)), f32(rng.uniform(0, H / 2))
        r, b = f32(rng.uniform(l + 1, W)), f32(rng.uniform(t + 1, H))
        ow, oh = int(rng.integers(1, 250)), int(rng.integers(1, 250))
        out_im = im.resize((ow, oh), Image.BILINEAR, box=(l, t, r, b))
        open(os.path.join(out, f"frac{k}.raw"), "wb").write(out_im.tobytes())
        f.write(f"{t!r} {l!r} {b!r} {r!r} {oh} {ow}\n")
)PY";

bool have_pil() { return frugal::testing::python_can("import PIL, numpy"); }

const std::string& reference_dir() {
  static const std::string dir =
      frugal::testing::run_python_script("resample_reference", kReference);
  return dir;
}

#define SKIP_WITHOUT_PIL() \
  if (!have_pil()) GTEST_SKIP() << "needs /usr/bin/python3 with PIL and numpy (python3-pil)";

constexpr int64_t kH = 301, kW = 257;

frugal::Image source(int64_t channels) {
  frugal::Image image;
  image.height = kH;
  image.width = kW;
  image.channels = channels;
  const std::string bytes = slurp(reference_dir() + "/src" + std::to_string(channels) + ".raw");
  image.pixels.assign(bytes.begin(), bytes.end());
  EXPECT_EQ(static_cast<int64_t>(image.pixels.size()), kH * kW * channels);
  return image;
}

int64_t differing(const std::vector<uint8_t>& mine, const std::string& pil) {
  if (mine.size() != pil.size()) return -1;
  int64_t n = 0;
  for (size_t k = 0; k < pil.size(); ++k) n += mine[k] != static_cast<uint8_t>(pil[k]);
  return n;
}

}  // namespace

TEST(Resample, CropResizeEqualsPilForManyBoxesAndChannelCounts) {
  SKIP_WITHOUT_PIL();
  const std::string dir = reference_dir();
  const frugal::Image sources[4] = {source(1), source(2), source(3), source(4)};
  std::ifstream in(dir + "/cases.txt");
  int64_t c, t, l, h, w, oh, ow;
  int k = 0;
  for (; in >> c >> t >> l >> h >> w >> oh >> ow; ++k) {
    const frugal::Image out = frugal::resize_bilinear(sources[c - 1], {t, l, h, w}, oh, ow);
    EXPECT_EQ(differing(out.pixels, slurp(dir + "/out" + std::to_string(k) + ".raw")), 0)
        << "case " << k << ": " << c << " channels, box (" << t << ", " << l << ", " << h << "x"
        << w << ") -> " << oh << "x" << ow;
  }
  EXPECT_EQ(k, 4 * 20);
}

TEST(Resample, FractionalBoxEqualsPilsResizeWithBox) {
  SKIP_WITHOUT_PIL();
  const std::string dir = reference_dir();
  const frugal::Image rgb = source(3);
  std::ifstream in(dir + "/fractional.txt");
  double t, l, b, r;
  int64_t oh, ow;
  int k = 0;
  for (; in >> t >> l >> b >> r >> oh >> ow; ++k) {
    std::vector<uint8_t> out(static_cast<size_t>(oh * ow * 3));
    frugal::detail::resample_bilinear(rgb.pixels.data(), kW * 3, kH, kW, 3, t, l, b, r, oh, ow,
                                      out.data());
    EXPECT_EQ(differing(out, slurp(dir + "/frac" + std::to_string(k) + ".raw")), 0) << "case " << k;
  }
  EXPECT_EQ(k, 10);
}
