// Transforms against torchvision 0.14 + PIL (Debian's python3-torchvision, python3-pil, run from
// the test): RandomResizedCrop boxes, PIL's bilinear resize, Resize, CenterCrop.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "frugal/data/transforms.h"
#include "frugal/error.h"
#include "python_oracle.h"
#include "test_support.h"

namespace {

using frugal::testing::slurp;

const char* kReference = R"PY(
import sys, os
import numpy as np
import torch
from PIL import Image
import torchvision.transforms as T
out = sys.argv[1]
sizes = [(375, 500), (500, 375), (64, 64), (10, 300), (300, 10), (1, 1), (224, 224), (7, 3)]
with open(os.path.join(out, "boxes.txt"), "w") as f:
    for (H, W) in sizes:
        for seed in range(300):
            torch.manual_seed(seed)
            i, j, h, w = T.RandomResizedCrop.get_params(torch.empty(3, H, W), [0.08, 1.0], [3 / 4, 4 / 3])
            f.write(f"{H} {W} {seed} {i} {j} {h} {w}\n")
torch.manual_seed(1234)
with open(os.path.join(out, "stream.txt"), "w") as f:
    for _ in range(20000):
        i, j, h, w = T.RandomResizedCrop.get_params(torch.empty(3, 375, 500), [0.08, 1.0], [3 / 4, 4 / 3])
        f.write(f"{i} {j} {h} {w}\n")
rng = np.random.default_rng(3)
rgb = Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), "RGB")
gray = Image.fromarray(rng.integers(0, 256, (29, 31), dtype=np.uint8), "L")
open(os.path.join(out, "rgb.raw"), "wb").write(rgb.tobytes())
open(os.path.join(out, "gray.raw"), "wb").write(gray.tobytes())
cases = [("rgb", (0, 0, 37, 53), 224, 224), ("rgb", (3, 5, 20, 30), 7, 9), ("rgb", (0, 0, 37, 53), 13, 100),
         ("rgb", (1, 2, 36, 50), 18, 25), ("rgb", (10, 10, 1, 1), 5, 4), ("gray", (0, 0, 29, 31), 8, 3),
         ("gray", (4, 0, 25, 31), 224, 224)]
with open(os.path.join(out, "resize.txt"), "w") as f:
    for k, (name, (t, l, h, w), oh, ow) in enumerate(cases):
        im = rgb if name == "rgb" else gray
        r = im.crop((l, t, l + w, t + h)).resize((ow, oh), Image.BILINEAR)
        open(os.path.join(out, f"resize{k}.raw"), "wb").write(r.tobytes())
        f.write(f"{name} {t} {l} {h} {w} {oh} {ow}\n")
import torchvision.transforms.functional as F
factors = [0.0, 0.37, 0.8123, 1.0, 1.6, 2.9]
with open(os.path.join(out, "jitter.txt"), "w") as f:
    for name, im in (("rgb", rgb), ("gray", gray)):
        for kind, fn in (("b", F.adjust_brightness), ("c", F.adjust_contrast), ("s", F.adjust_saturation)):
            for k, fac in enumerate(factors):
                fac32 = float(np.float32(fac))
                open(os.path.join(out, f"jit_{name}_{kind}{k}.raw"), "wb").write(fn(im, fac32).tobytes())
cj = T.ColorJitter(0.4, 0.4, 0.4)
with open(os.path.join(out, "jitter_params.txt"), "w") as f:
    for seed in range(200):
        torch.manual_seed(seed)
        idx, b, c, s, h = cj.get_params(cj.brightness, cj.contrast, cj.saturation, cj.hue)
        f.write(" ".join(str(int(v)) for v in idx) + f" {b!r} {c!r} {s!r}\n")
    torch.manual_seed(77)
    open(os.path.join(out, "jitter_full.raw"), "wb").write(cj(rgb).tobytes())
for k, tf in enumerate([T.Resize(20), T.Resize((11, 70)), T.CenterCrop(20), T.CenterCrop((60, 40)), T.CenterCrop((36, 52))]):
    r = tf(rgb)
    open(os.path.join(out, f"tf{k}.raw"), "wb").write(r.tobytes())
    open(os.path.join(out, f"tf{k}.size"), "w").write(f"{r.size[1]} {r.size[0]}")
)PY";

bool have_torchvision() { return frugal::testing::python_can("import torchvision, PIL, numpy"); }

const std::string& reference_dir() {
  static const std::string dir =
      frugal::testing::run_python_script("transforms_reference", kReference);
  return dir;
}

#define SKIP_WITHOUT_TORCHVISION()                                                      \
  if (!have_torchvision()) {                                                            \
    GTEST_SKIP() << "needs /usr/bin/python3 with torchvision, PIL and numpy (Debian's " \
                    "python3-torchvision, python3-pil)";                                \
  }

frugal::Image image_from(const std::string& bytes, int64_t h, int64_t w, int64_t c) {
  frugal::Image image;
  image.height = h;
  image.width = w;
  image.channels = c;
  image.pixels.assign(bytes.begin(), bytes.end());
  EXPECT_EQ(static_cast<int64_t>(bytes.size()), h * w * c);
  return image;
}

// LibTorch's CPU generator drawn as torchvision draws from torch's default generator.
struct TorchDraws {
  at::Generator gen;
  explicit TorchDraws(uint64_t seed) : gen(at::detail::createCPUGenerator(seed)) {}
  float uniform(float lo, float hi) {
    return at::empty({1}, at::kFloat).uniform_(lo, hi, gen).item<float>();
  }
  int64_t randint(int64_t n) { return at::randint(0, n, {1}, gen, at::kLong).item<int64_t>(); }
};

frugal::CropBox torch_box(TorchDraws& d, int64_t h, int64_t w) {
  return frugal::RandomResizedCrop::get_params(
      h, w, {0.08, 1.0}, {3.0 / 4.0, 4.0 / 3.0},
      [&](float lo, float hi) { return d.uniform(lo, hi); },
      [&](int64_t n) { return d.randint(n); });
}

}  // namespace

TEST(RandomResizedCrop, BoxesEqualTorchvisionsForTheSameSeeds) {
  SKIP_WITHOUT_TORCHVISION();
  std::ifstream in(reference_dir() + "/boxes.txt");
  int64_t H, W, seed, i, j, h, w, count = 0, fallbacks = 0;
  while (in >> H >> W >> seed >> i >> j >> h >> w) {
    TorchDraws draws(static_cast<uint64_t>(seed));
    const frugal::CropBox box = torch_box(draws, H, W);
    EXPECT_EQ(box, (frugal::CropBox{i, j, h, w})) << H << "x" << W << " seed " << seed;
    fallbacks += (H == 10 || H == 300 || H == 1);
    ++count;
  }
  EXPECT_EQ(count, 8 * 300);
  // The same generator, drawn on: 20000 boxes in a row.
  std::ifstream stream(reference_dir() + "/stream.txt");
  TorchDraws draws(1234);
  for (int k = 0; k < 20000 && (stream >> i >> j >> h >> w); ++k) {
    ASSERT_EQ(torch_box(draws, 375, 500), (frugal::CropBox{i, j, h, w})) << "draw " << k;
  }
}

TEST(RandomResizedCrop, SampleRngGivesTorchvisionsDistribution) {
  SKIP_WITHOUT_TORCHVISION();
  // Moments of area fraction, log aspect and the box centre, from 20000 draws each.
  auto moments = [](const std::vector<frugal::CropBox>& boxes) {
    std::vector<double> m(8, 0.0);
    for (const auto& b : boxes) {
      const double v[4] = {double(b.height * b.width) / (375.0 * 500.0),
                           std::log(double(b.width) / double(b.height)),
                           (b.top + b.height / 2.0) / 375.0, (b.left + b.width / 2.0) / 500.0};
      for (int k = 0; k < 4; ++k) {
        m[k] += v[k] / boxes.size();
        m[4 + k] += v[k] * v[k] / boxes.size();
      }
    }
    return m;
  };
  std::vector<frugal::CropBox> theirs, mine;
  std::ifstream stream(reference_dir() + "/stream.txt");
  int64_t i, j, h, w;
  while (stream >> i >> j >> h >> w) theirs.push_back({i, j, h, w});
  ASSERT_EQ(theirs.size(), 20000u);
  for (int64_t k = 0; k < 20000; ++k) {
    frugal::SampleRng rng(99, 3, k);
    mine.push_back(frugal::RandomResizedCrop::get_params(
        375, 500, {0.08, 1.0}, {3.0 / 4.0, 4.0 / 3.0},
        [&](float lo, float hi) { return rng.uniform(lo, hi); },
        [&](int64_t n) { return rng.randint(n); }));
  }
  const auto a = moments(theirs), b = moments(mine);
  for (int k = 0; k < 4; ++k) {
    const double sd = std::sqrt(std::max(a[4 + k] - a[k] * a[k], 1e-12));
    // Two independent means of 20000 draws differ by sd * sqrt(2 / 20000) typically; allow 5x.
    EXPECT_NEAR(a[k], b[k], 5.0 * sd * std::sqrt(2.0 / 20000.0)) << "moment " << k;
    EXPECT_NEAR(std::sqrt(a[4 + k] - a[k] * a[k]), std::sqrt(b[4 + k] - b[k] * b[k]),
                0.03 * sd + 1e-3)
        << "spread " << k;
  }
}

TEST(Resize, BilinearEqualsPilCropResize) {
  SKIP_WITHOUT_TORCHVISION();
  const std::string dir = reference_dir();
  const frugal::Image rgb = image_from(slurp(dir + "/rgb.raw"), 37, 53, 3);
  const frugal::Image gray = image_from(slurp(dir + "/gray.raw"), 29, 31, 1);
  std::ifstream in(dir + "/resize.txt");
  std::string name;
  int64_t t, l, h, w, oh, ow;
  int k = 0;
  for (; in >> name >> t >> l >> h >> w >> oh >> ow; ++k) {
    const frugal::Image out =
        frugal::resize_bilinear(name == "rgb" ? rgb : gray, {t, l, h, w}, oh, ow);
    const std::string pil = slurp(dir + "/resize" + std::to_string(k) + ".raw");
    ASSERT_EQ(out.pixels.size(), pil.size()) << "case " << k;
    EXPECT_EQ(0, std::memcmp(out.pixels.data(), pil.data(), pil.size())) << "case " << k;
  }
  EXPECT_EQ(k, 7);
}

TEST(Resize, ResizeAndCenterCropEqualTorchvisions) {
  SKIP_WITHOUT_TORCHVISION();
  const std::string dir = reference_dir();
  const frugal::Image rgb = image_from(slurp(dir + "/rgb.raw"), 37, 53, 3);
  const std::vector<frugal::TransformPtr> transforms = {
      std::make_shared<frugal::Resize>(20), std::make_shared<frugal::Resize>(11, 70),
      std::make_shared<frugal::CenterCrop>(20), std::make_shared<frugal::CenterCrop>(60, 40),
      std::make_shared<frugal::CenterCrop>(36, 52)};
  frugal::SampleRng rng(0, 0, 0);
  for (size_t k = 0; k < transforms.size(); ++k) {
    const frugal::Image out = transforms[k]->apply(rgb, rng);
    std::ifstream size(dir + "/tf" + std::to_string(k) + ".size");
    int64_t h = 0, w = 0;
    size >> h >> w;
    EXPECT_EQ(out.height, h) << transforms[k]->describe();
    EXPECT_EQ(out.width, w) << transforms[k]->describe();
    const std::string ref = slurp(dir + "/tf" + std::to_string(k) + ".raw");
    ASSERT_EQ(out.pixels.size(), ref.size()) << transforms[k]->describe();
    EXPECT_EQ(0, std::memcmp(out.pixels.data(), ref.data(), ref.size()))
        << transforms[k]->describe();
  }
}

TEST(SampleRng, IsAPureFunctionOfSeedEpochIndex) {
  frugal::SampleRng a(5, 2, 17), b(5, 2, 17), c(5, 2, 18), d(5, 3, 17), e(6, 2, 17);
  const uint64_t first = a.next_u64();
  EXPECT_EQ(first, b.next_u64());
  EXPECT_NE(first, c.next_u64());
  EXPECT_NE(first, d.next_u64());
  EXPECT_NE(first, e.next_u64());
  double sum = 0;
  int64_t bins[7] = {0};
  for (int k = 0; k < 70000; ++k) {
    const float u = a.uniform(0.0f, 1.0f);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
    ++bins[a.randint(7)];
  }
  EXPECT_NEAR(sum / 70000, 0.5, 0.005);
  for (int64_t n : bins) EXPECT_NEAR(n, 10000, 500);
}

TEST(RandomHorizontalFlip, FlipsWithProbabilityP) {
  frugal::Image image;
  image.height = 1;
  image.width = 3;
  image.channels = 2;
  image.pixels = {1, 2, 3, 4, 5, 6};
  frugal::RandomHorizontalFlip always(1.0), never(0.0), half(0.5);
  frugal::SampleRng rng(1, 0, 0);
  EXPECT_EQ(always.apply(image, rng).pixels, (std::vector<uint8_t>{5, 6, 3, 4, 1, 2}));
  EXPECT_EQ(never.apply(image, rng).pixels, image.pixels);
  int flipped = 0;
  for (int k = 0; k < 4000; ++k) {
    frugal::SampleRng r(1, 0, k);
    flipped += half.apply(image, r).pixels[0] == 5;
  }
  EXPECT_NEAR(flipped, 2000, 150);
}

TEST(Transforms, ComposeAndBadOptions) {
  frugal::Image image;
  image.height = 40;
  image.width = 30;
  image.channels = 3;
  image.pixels.assign(40 * 30 * 3, 7);
  auto tf = frugal::compose({std::make_shared<frugal::RandomResizedCrop>(16),
                             std::make_shared<frugal::RandomHorizontalFlip>(),
                             std::make_shared<frugal::LambdaTransform>(
                                 [](const frugal::Image& in, frugal::SampleRng&) {
                                   frugal::Image out = in;
                                   for (auto& p : out.pixels) p = static_cast<uint8_t>(p + 1);
                                   return out;
                                 },
                                 "PlusOne")});
  frugal::SampleRng rng(0, 0, 0);
  const frugal::Image out = tf->apply(image, rng);
  EXPECT_EQ(out.height, 16);
  EXPECT_EQ(out.width, 16);
  EXPECT_EQ(out.pixels, std::vector<uint8_t>(16 * 16 * 3, 8));
  EXPECT_NE(tf->describe().find("PlusOne"), std::string::npos);
  EXPECT_NE(frugal::testing::error_message([] {
              frugal::RandomResizedCrop(0);
            }).find("RandomResizedCrop: size must be >= 1"),
            std::string::npos);
  EXPECT_NE(frugal::testing::error_message([] {
              frugal::RandomResizedCrop(8, {0.5, 0.1});
            }).find("scale must be"),
            std::string::npos);
  EXPECT_NE(frugal::testing::error_message([&] {
              frugal::resize_bilinear(image, {30, 0, 20, 5}, 4, 4);
            }).find("is not inside the 40x30 image"),
            std::string::npos);
}

TEST(ColorJitter, AdjustmentsEqualPils) {
  SKIP_WITHOUT_TORCHVISION();
  const std::string dir = reference_dir();
  const frugal::Image rgb = image_from(slurp(dir + "/rgb.raw"), 37, 53, 3);
  const frugal::Image gray = image_from(slurp(dir + "/gray.raw"), 29, 31, 1);
  const float factors[] = {0.0f, 0.37f, 0.8123f, 1.0f, 1.6f, 2.9f};
  for (const auto& [name, image] : {std::pair{"rgb", &rgb}, std::pair{"gray", &gray}}) {
    for (int k = 0; k < 6; ++k) {
      const frugal::Image outs[3] = {frugal::ColorJitter::adjust_brightness(*image, factors[k]),
                                     frugal::ColorJitter::adjust_contrast(*image, factors[k]),
                                     frugal::ColorJitter::adjust_saturation(*image, factors[k])};
      const char* kinds[3] = {"b", "c", "s"};
      for (int t = 0; t < 3; ++t) {
        const std::string ref =
            slurp(dir + "/jit_" + name + "_" + kinds[t] + std::to_string(k) + ".raw");
        ASSERT_EQ(outs[t].pixels.size(), ref.size());
        EXPECT_EQ(0, std::memcmp(outs[t].pixels.data(), ref.data(), ref.size()))
            << name << " " << kinds[t] << " factor " << factors[k];
      }
    }
  }
}

TEST(ColorJitter, ParamsAndResultEqualTorchvisionsForTheSameSeeds) {
  SKIP_WITHOUT_TORCHVISION();
  const std::string dir = reference_dir();
  frugal::ColorJitter jitter(0.4, 0.4, 0.4);
  auto torch_params = [&](TorchDraws& d) {
    return jitter.get_params([&](float lo, float hi) { return d.uniform(lo, hi); },
                             [&](int64_t n) {
                               at::Tensor p = at::randperm(n, d.gen, at::kLong);
                               return std::vector<int64_t>(p.data_ptr<int64_t>(),
                                                           p.data_ptr<int64_t>() + n);
                             });
  };
  std::ifstream in(dir + "/jitter_params.txt");
  int count = 0;
  for (int64_t seed = 0; seed < 200; ++seed, ++count) {
    std::vector<int64_t> order(4);
    double b, c, s;
    ASSERT_TRUE(in >> order[0] >> order[1] >> order[2] >> order[3] >> b >> c >> s);
    TorchDraws draws(static_cast<uint64_t>(seed));
    const auto p = torch_params(draws);
    EXPECT_EQ(p.order, order) << "seed " << seed;
    EXPECT_EQ(static_cast<double>(p.brightness), b) << "seed " << seed;
    EXPECT_EQ(static_cast<double>(p.contrast), c) << "seed " << seed;
    EXPECT_EQ(static_cast<double>(p.saturation), s) << "seed " << seed;
  }
  EXPECT_EQ(count, 200);
  const frugal::Image rgb = image_from(slurp(dir + "/rgb.raw"), 37, 53, 3);
  TorchDraws draws(77);
  const frugal::Image out = frugal::ColorJitter::apply_params(rgb, torch_params(draws));
  const std::string ref = slurp(dir + "/jitter_full.raw");
  ASSERT_EQ(out.pixels.size(), ref.size());
  EXPECT_EQ(0, std::memcmp(out.pixels.data(), ref.data(), ref.size()));
  // With SampleRng: a pure function of (seed, epoch, index).
  frugal::SampleRng r1(1, 2, 3), r2(1, 2, 3);
  EXPECT_EQ(jitter.apply(rgb, r1).pixels, jitter.apply(rgb, r2).pixels);
}
