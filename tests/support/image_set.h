// A small image folder made by PIL (the test oracle) for the tests of image containers (packed
// caches, LMDB), and what those tests share about batches and files.
#pragma once

#include <errno.h>  // program_invocation_short_name (glibc)
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "frugal/data/batch_source.h"
#include "frugal/data/image.h"
#include "frugal/data/transforms.h"
#include "python_oracle.h"
#include "test_support.h"

namespace frugal::testing {

// Smooth images with some grain (JPEG re-encoding stays close), of every kind the decoder meets:
// RGB JPEG, RGB PNG, grayscale PNG, RGBA PNG, a PNG named .jpg, in nested folders; 3 classes of
// 8, 9 and 10 images.
inline const char* image_set_script() {
  return R"PY(
import os, sys
import numpy as np
from PIL import Image
root = sys.argv[1]
rng = np.random.default_rng(5)
for c in range(3):
    for k in range(8 + c):
        h, w = int(rng.integers(20, 70)), int(rng.integers(20, 70))
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 127 // (h + w)) + 60], -1)
        a = np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
        d = os.path.join(root, f"class{c}", "sub" if k >= 6 else "")
        os.makedirs(d, exist_ok=True)
        kind = k % 5
        p = os.path.join(d, f"{k:02d}")
        if kind == 0:
            Image.fromarray(a).save(p + ".jpg", quality=90)
        elif kind == 1:
            Image.fromarray(a).save(p + ".png")
        elif kind == 2:
            Image.fromarray(a[:, :, 0]).save(p + ".png")
        elif kind == 3:
            Image.fromarray(np.dstack([a, a[:, :, :1]])).save(p + ".png")
        else:
            Image.fromarray(a).save(p + ".jpg", format="PNG")
)PY";
}

inline bool have_pil() { return python_can("import PIL, numpy"); }

/// The folder, made once per test binary.
/// The folder, made once per test binary, in a folder of its own (test binaries run in parallel,
/// and temp_dir empties the folder it returns).
inline const std::string& image_set() {
  static const std::string dir = run_python_script(
      std::string("image_set_") + program_invocation_short_name, image_set_script(), "images");
  return dir;
}

#define SKIP_WITHOUT_IMAGE_SET()    \
  if (!frugal::testing::have_pil()) \
    GTEST_SKIP() << "needs /usr/bin/python3 with PIL and numpy (python3-pil)";

inline std::vector<uint8_t> file_bytes(const std::string& path) { return read_file_bytes(path); }

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

inline bool is_jpeg_file(const std::string& path) {
  const std::vector<uint8_t> b = file_bytes(path);
  return detect_image_format(b.data(), b.size()) == ImageFormat::kJpeg;
}

/// Every batch of `epoch`, from batch `skip` on.
inline std::vector<Batch> epoch(BatchSource& source, int64_t e, int64_t skip = 0) {
  source.start_epoch(e, skip);
  std::vector<Batch> out;
  while (auto b = source.next()) out.push_back(*b);
  return out;
}

inline void expect_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_TRUE(a[k].data.equal(b[k].data)) << "batch " << k;
    EXPECT_TRUE(a[k].target.equal(b[k].target)) << "batch " << k;
  }
}

/// RandomResizedCrop(16) + horizontal flip.
inline TransformPtr augment() {
  return compose(
      {std::make_shared<RandomResizedCrop>(16), std::make_shared<RandomHorizontalFlip>()});
}

}  // namespace frugal::testing
