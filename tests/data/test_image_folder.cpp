// ImageFolder and the decoder against torchvision 0.14 + PIL (Debian's python3-torchvision and
// python3-pil, run from the test): sample lists, class indices and pixels on a tricky tree.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "frugal/data/image.h"
#include "frugal/data/image_folder.h"
#include "frugal/error.h"
#include "python_oracle.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

using frugal::testing::slurp;

// Writes a tricky tree under argv[1]/tree and torchvision's/PIL's view of it under argv[1].
const char* kMakeTree = R"PY(
import os, sys, io, json
import numpy as np
from PIL import Image
from torchvision.datasets import ImageFolder
out = sys.argv[1]
root = os.path.join(out, "tree")
rng = np.random.default_rng(7)

def picture(h, w, c):
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 3) % 256], -1)
    noise = rng.integers(0, 60, size=(h, w, 3))
    a = np.clip(base + noise, 0, 255).astype(np.uint8)
    return a[:, :, :c] if c < 3 else a

def save(rel, im, fmt, **kw):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im.save(path, fmt, **kw)

rgb = lambda h, w: Image.fromarray(picture(h, w, 3), "RGB")
save("a/rgb.jpg", rgb(37, 23), "JPEG", quality=90)
save("a/UPPER.JPG", rgb(16, 16), "JPEG", quality=75)
save("a/x/nested.jpeg", rgb(31, 45), "JPEG", quality=95, subsampling=0)
save("a/x-y/dash.png", rgb(9, 11), "PNG")
save("a/x/y/deeper.PNG", rgb(12, 7), "PNG")
save("a/.cache/hidden_dir.jpg", rgb(8, 8), "JPEG")
save("a/.hidden.png", rgb(5, 6), "PNG")
open(os.path.join(root, "a/notes.txt"), "w").write("not an image")
save("a/x/picture.bmp.txt", rgb(4, 4), "PNG")
save("B/gray.jpg", rgb(21, 19).convert("L"), "JPEG")
save("B/gray.png", rgb(13, 17).convert("L"), "PNG")
save("B/la.png", Image.fromarray(picture(10, 12, 3)[:, :, :2].copy(), "LA"), "PNG")
save("B/rgba.png", Image.fromarray(np.dstack([picture(14, 9, 3), rng.integers(0, 255, (14, 9), dtype=np.uint8)]), "RGBA"), "PNG")
save("B/palette.png", rgb(15, 15).convert("P", palette=Image.ADAPTIVE, colors=17), "PNG", transparency=3)
save("B/bits1.png", rgb(9, 13).convert("1"), "PNG")
save("a-b/cmyk.jpg", rgb(27, 33).convert("CMYK"), "JPEG", quality=92)
save("a-b/misnamed_png.jpg", rgb(11, 9), "PNG")
save("a-b/misnamed_jpeg.PNG", rgb(11, 9), "JPEG")
save(".hidden_class/h.jpeg", rgb(6, 10), "JPEG")
save("zz/Z.webP".lower().replace("webp", "jpg"), rgb(19, 29), "JPEG", quality=60)
os.makedirs(os.path.join(root, "not_a_class_file_dir.jpg.d"), exist_ok=True)
save("not_a_class_file_dir.jpg.d/inside.png", rgb(3, 3), "PNG")
open(os.path.join(root, "top_level_file.jpg"), "w").write("files at the top are no class")

# A PNG header claiming 20000x10000 pixels and no pixel data: PIL's decompression-bomb check.
import struct, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
with open(os.path.join(out, "bomb.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 10000, 8, 0, 0, 0, 0)) + chunk(b"IEND", b""))
try:
    Image.open(os.path.join(out, "bomb.png"))
    verdict = "opened"
except Image.DecompressionBombError:
    verdict = "DecompressionBombError"
open(os.path.join(out, "bomb.txt"), "w").write(verdict + "\n")

ds = ImageFolder(root)
with open(os.path.join(out, "classes.txt"), "w") as f:
    for c in ds.classes: f.write(c + "\n")
with open(os.path.join(out, "samples.txt"), "w") as f:
    for i, (p, label) in enumerate(ds.samples):
        f.write(f"{os.path.relpath(p, root)}\t{label}\n")
        for mode in ("RGB", "L"):
            im = Image.open(p).convert(mode)
            open(os.path.join(out, f"{i}.{mode}"), "wb").write(im.tobytes())
)PY";

bool have_torchvision() { return frugal::testing::python_can("import torchvision, PIL, numpy"); }

std::vector<std::string> lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

void write(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

// The tree and torchvision's answers, made once for the whole file.
const std::string& reference_dir() {
  static const std::string dir =
      frugal::testing::run_python_script("image_folder_reference", kMakeTree);
  return dir;
}

#define SKIP_WITHOUT_TORCHVISION()                                                      \
  if (!have_torchvision()) {                                                            \
    GTEST_SKIP() << "needs /usr/bin/python3 with torchvision, PIL and numpy (Debian's " \
                    "python3-torchvision, python3-pil)";                                \
  }

}  // namespace

TEST(ImageFolder, SampleListAndClassesEqualTorchvisions) {
  SKIP_WITHOUT_TORCHVISION();
  const std::string dir = reference_dir();
  frugal::ImageFolder folder(dir + "/tree");
  EXPECT_EQ(folder.classes(), lines(dir + "/classes.txt"));
  std::vector<std::string> mine;
  for (const auto& s : folder.samples()) {
    mine.push_back(fs::relative(s.path, dir + "/tree").string() + "\t" + std::to_string(s.label));
  }
  const std::vector<std::string> theirs = lines(dir + "/samples.txt");
  EXPECT_EQ(mine, theirs);
  EXPECT_GE(theirs.size(), 18u);  // the tree really has its tricky files
}

TEST(ImageFolder, PixelsEqualPilConvert) {
  SKIP_WITHOUT_TORCHVISION();
  const std::string dir = reference_dir();
  frugal::ImageFolder folder(dir + "/tree");
  for (size_t i = 0; i < folder.samples().size(); ++i) {
    const std::string& path = folder.samples()[i].path;
    for (const auto& [mode, name] :
         {std::pair{frugal::ColorMode::kRGB, "RGB"}, std::pair{frugal::ColorMode::kGray, "L"}}) {
      SCOPED_TRACE(path + " " + name);
      const frugal::Image image = frugal::read_image(path, mode);
      const std::string pil = slurp(dir + "/" + std::to_string(i) + "." + name);
      EXPECT_EQ(image.channels, mode == frugal::ColorMode::kRGB ? 3 : 1);
      ASSERT_EQ(image.pixels.size(), pil.size());
      // Exact: PIL on Debian decodes with the same libjpeg-turbo and libpng.
      int64_t differ = 0;
      for (size_t k = 0; k < pil.size(); ++k) {
        differ += image.pixels[k] != static_cast<uint8_t>(pil[k]);
      }
      EXPECT_EQ(differ, 0);
    }
  }
}

TEST(ImageFolder, ToTensorIsHwcUint8) {
  frugal::Image image;
  image.height = 2;
  image.width = 3;
  image.channels = 3;
  for (int i = 0; i < 18; ++i) image.pixels.push_back(static_cast<uint8_t>(i));
  at::Tensor t = image.to_tensor();
  EXPECT_EQ(t.sizes(), (at::IntArrayRef{2, 3, 3}));
  EXPECT_EQ(t[1][2][0].item<int64_t>(), 15);
}

TEST(ImageFolder, EmptyClassAndNoClassAreErrorsNamingThem) {
  const std::string dir = frugal::testing::temp_dir("image_folder_empty");
  write(dir + "/root/full/a.png", "x");
  write(dir + "/root/empty_one/readme.txt", "x");
  fs::create_directories(dir + "/root/empty_two");
  const std::string message =
      frugal::testing::error_message([&] { frugal::ImageFolder folder(dir + "/root"); });
  EXPECT_NE(message.find("'empty_one', 'empty_two'"), std::string::npos) << message;
  EXPECT_EQ(message.find("'full'"), std::string::npos) << message;

  fs::create_directories(dir + "/flat");
  write(dir + "/flat/a.jpg", "x");
  const std::string none =
      frugal::testing::error_message([&] { frugal::ImageFolder folder(dir + "/flat"); });
  EXPECT_NE(none.find("no class folder in '" + dir + "/flat'"), std::string::npos) << none;
  const std::string missing =
      frugal::testing::error_message([&] { frugal::ImageFolder folder(dir + "/nowhere"); });
  EXPECT_NE(missing.find("'" + dir + "/nowhere' is not a folder"), std::string::npos) << missing;
}

TEST(ImageFolder, CustomExtensionsAreCaseInsensitive) {
  const std::string dir = frugal::testing::temp_dir("image_folder_ext");
  write(dir + "/c/one.RAW", "x");
  write(dir + "/c/two.jpg", "x");
  frugal::ImageFolder folder(dir, {".Raw"});
  ASSERT_EQ(folder.size(), 1);
  EXPECT_EQ(folder.samples()[0].path, dir + "/c/one.RAW");
}

TEST(ImageDecode, EachBadFileGivesItsError) {
  SKIP_WITHOUT_TORCHVISION();
  const std::string ref = reference_dir();
  const std::string dir = frugal::testing::temp_dir("image_bad_files");
  const std::string jpeg = slurp(ref + "/tree/a/rgb.jpg");
  const std::string png = slurp(ref + "/tree/a-b/misnamed_png.jpg");
  write(dir + "/truncated.jpg", jpeg.substr(0, jpeg.size() - jpeg.size() / 5));
  write(dir + "/header_only.jpg", jpeg.substr(0, 20));
  write(dir + "/truncated.png", png.substr(0, png.size() - 30));
  std::string bad_crc = png;
  bad_crc[png.size() / 2] = static_cast<char>(bad_crc[png.size() / 2] ^ 0x55);
  write(dir + "/bad_crc.png", bad_crc);
  write(dir + "/text.jpg", "hello, I am not an image");
  write(dir + "/empty.png", "");
  write(dir + "/bitmap.bmp", std::string("BM") + std::string(60, '\0'));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"truncated.jpg", "(JPEG): the file is truncated"},
      {"header_only.jpg", "(JPEG): "},
      {"truncated.png", "(PNG): "},
      {"bad_crc.png", "(PNG): "},
      {"text.jpg", "not an image file"},
      {"empty.png", "the file is empty"},
      {"bitmap.bmp", "BMP is not supported"},
      {"missing.png", "no such file"},
  };
  for (const auto& [file, expected] : cases) {
    const std::string path = dir + "/" + file;
    const std::string message = frugal::testing::error_message([&] { frugal::read_image(path); });
    EXPECT_NE(message.find("'" + path + "'"), std::string::npos) << message;
    EXPECT_NE(message.find(expected), std::string::npos) << file << ": " << message;
  }
}

TEST(ImageList, ReadsCsvRelativeToItsFolder) {
  const std::string dir = frugal::testing::temp_dir("image_list");
  write(dir + "/list.csv",
        "path,label\nimg/a.jpg,3\r\n\"img/with,comma \"\"q\"\".png\",0\n/abs/b.png,12\n");
  const auto samples = frugal::read_image_list(dir + "/list.csv");
  ASSERT_EQ(samples.size(), 3u);
  EXPECT_EQ(samples[0].path, dir + "/img/a.jpg");
  EXPECT_EQ(samples[0].label, 3);
  EXPECT_EQ(samples[1].path, dir + "/img/with,comma \"q\".png");
  EXPECT_EQ(samples[2].path, "/abs/b.png");
  EXPECT_EQ(samples[2].label, 12);
  EXPECT_EQ(frugal::read_image_list(dir + "/list.csv", "/base")[0].path, "/base/img/a.jpg");

  for (const auto& [text, expected] :
       std::vector<std::pair<std::string, std::string>>{{"a.jpg,1\nb.jpg,x\n", "line 2: the label"},
                                                        {"a.jpg,-1\n", "line 1: the label"},
                                                        {"a.jpg\n", "line 1: expected 2 cells"},
                                                        {"\"a.jpg,1\n", "unterminated quote"},
                                                        {"path,label\n", "no sample"}}) {
    write(dir + "/bad.csv", text);
    const std::string message =
        frugal::testing::error_message([&] { frugal::read_image_list(dir + "/bad.csv"); });
    EXPECT_NE(message.find("image list '" + dir + "/bad.csv'"), std::string::npos) << message;
    EXPECT_NE(message.find(expected), std::string::npos) << message;
  }
}

TEST(ImageDecode, PixelLimitIsPilsDecompressionBombLimit) {
  SKIP_WITHOUT_TORCHVISION();
  const std::string ref = reference_dir();
  struct Restore {
    ~Restore() { frugal::set_max_image_pixels(2 * int64_t{89478485}); }
  } restore;
  // A 45-byte PNG claiming 20000x10000: PIL refuses it on open, and so does frugal, before the
  // 200 MB of pixels are allocated.
  EXPECT_EQ(lines(ref + "/bomb.txt"), std::vector<std::string>{"DecompressionBombError"});
  EXPECT_EQ(frugal::max_image_pixels(), 178956970);
  const std::string bomb = ref + "/bomb.png";
  std::string message = frugal::testing::error_message([&] { frugal::read_image(bomb); });
  EXPECT_NE(message.find("'" + bomb + "' (PNG)"), std::string::npos) << message;
  EXPECT_NE(message.find("20000x10000 = 200000000 pixels"), std::string::npos) << message;
  EXPECT_NE(message.find("max_image_pixels() = 178956970"), std::string::npos) << message;

  // The limit is exact, for both decoders: rgb.jpg is 23x37 = 851 pixels, dash.png 11x9 = 99.
  const std::string jpeg = ref + "/tree/a/rgb.jpg", png = ref + "/tree/a/x-y/dash.png";
  frugal::set_max_image_pixels(851);
  EXPECT_EQ(frugal::read_image(jpeg).width, 23);
  frugal::set_max_image_pixels(850);
  message = frugal::testing::error_message([&] { frugal::read_image(jpeg); });
  EXPECT_NE(message.find("'" + jpeg + "' (JPEG): its header claims 23x37 = 851 pixels"),
            std::string::npos)
      << message;
  frugal::set_max_image_pixels(99);
  EXPECT_EQ(frugal::read_image(png).height, 9);
  frugal::set_max_image_pixels(98);
  EXPECT_NE(frugal::testing::error_message([&] { frugal::read_image(png); }).find("(PNG)"),
            std::string::npos);
  // 0: no limit.
  frugal::set_max_image_pixels(0);
  EXPECT_EQ(frugal::read_image(jpeg).height, 37);
  message = frugal::testing::error_message([] { frugal::set_max_image_pixels(-1); });
  EXPECT_NE(message.find("set_max_image_pixels: expected a number of pixels >= 0"),
            std::string::npos)
      << message;
}
