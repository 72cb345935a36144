// IDX reader (gzip'd or plain, through zlib) and the Fashion-MNIST / MNIST data set.
#include "frugal/data/datasets/mnist.h"

#include <torch/torch.h>
#include <zlib.h>

#include <array>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <vector>

#include "frugal/error.h"

namespace frugal::datasets {

namespace {

namespace fs = std::filesystem;

constexpr uint32_t kLabelsMagic = 0x00000801;  // unsigned bytes, 1 dimension
constexpr uint32_t kImagesMagic = 0x00000803;  // unsigned bytes, 3 dimensions
// A deflate stream expands at most ~1032:1; a header that claims more than that is corrupt, and
// is refused before anything is allocated for it.
constexpr int64_t kMaxDeflateRatio = 1032;
constexpr int64_t kMaxElements = int64_t{1} << 40;

// Fashion-MNIST's training-set pixel statistics after scaling to [0,1] (MNIST's own are
// 0.1307 / 0.3081; the same constants are used for both so one model sees one input range).
constexpr double kMean = FashionMnist::kMean;
constexpr double kStd = FashionMnist::kStd;

std::string hex(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%08x", value);
  return text;
}

// Closes the gzFile on every path out of read_idx.
struct GzFile {
  gzFile file = nullptr;
  ~GzFile() {
    if (file != nullptr) gzclose(file);
  }
  // Reads up to `size` bytes; returns how many arrived (short on end of data or error).
  int64_t read(void* buffer, int64_t size) {
    int64_t done = 0;
    auto* out = static_cast<unsigned char*>(buffer);
    while (done < size) {
      const auto chunk = static_cast<unsigned>(std::min<int64_t>(size - done, INT_MAX / 2));
      const int got = gzread(file, out + done, chunk);
      if (got <= 0) break;
      done += got;
    }
    return done;
  }
  std::string zlib_error() {
    int code = Z_OK;
    const char* message = gzerror(file, &code);
    if (code == Z_OK || message == nullptr || *message == '\0') return "";
    return detail::concat(" (zlib: ", message, ")");
  }
};

uint32_t big_endian(const unsigned char* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
         uint32_t{bytes[3]};
}

// `dir/name.gz` or `dir/name`, whichever exists (gzip'd first, as Debian ships them).
std::string find_file(const std::string& dir, const std::string& name) {
  const fs::path base = fs::path(dir) / name;
  const std::string gz = base.string() + ".gz";
  std::error_code ec;
  if (fs::is_regular_file(gz, ec)) return gz;
  if (fs::is_regular_file(base, ec)) return base.string();
  FRUGAL_CHECK(false, "Fashion-MNIST file not found: tried ", gz, " and ", base.string(),
               fs::is_directory(dir, ec) ? "" : " (the folder does not exist)",
               "; install Debian's dataset-fashion-mnist package or pass --data-dir");
  return "";
}

Split load_split(const std::string& dir, const std::string& prefix) {
  const std::string images_path = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_file(dir, prefix + "-labels-idx1-ubyte");
  at::Tensor images = read_idx(images_path);
  at::Tensor labels = read_idx(labels_path);
  FRUGAL_CHECK(images.dim() == 3 && images.size(1) == 28 && images.size(2) == 28,
               "unexpected dimensions: ", images_path, " holds ", images.sizes(),
               ", expected images of [N, 28, 28]");
  FRUGAL_CHECK(labels.dim() == 1, "unexpected dimensions: ", labels_path, " holds ", labels.sizes(),
               ", expected labels of [N]");
  FRUGAL_CHECK(images.size(0) == labels.size(0), "image/label count mismatch: ", images_path,
               " has ", images.size(0), " images but ", labels_path, " has ", labels.size(0),
               " labels");
  Split split;
  split.images = images.unsqueeze(1).to(at::kFloat).div_(255.0).sub_(kMean).div_(kStd);
  split.labels = labels.to(at::kLong);
  return split;
}

}  // namespace

at::Tensor read_idx(const std::string& path) {
  std::error_code ec;
  FRUGAL_CHECK(fs::is_regular_file(path, ec), "IDX file not found: ", path);
  const auto file_size = static_cast<int64_t>(fs::file_size(path, ec));
  GzFile file;
  file.file = gzopen(path.c_str(), "rb");
  FRUGAL_CHECK(file.file != nullptr, "cannot open IDX file ", path);
  gzbuffer(file.file, 1 << 17);

  std::array<unsigned char, 4> word{};
  int64_t got = file.read(word.data(), 4);
  FRUGAL_CHECK(got == 4, "truncated IDX file ", path, ": expected a 4-byte header, got ", got,
               " bytes", file.zlib_error());
  const uint32_t magic = big_endian(word.data());
  FRUGAL_CHECK(magic == kLabelsMagic || magic == kImagesMagic, "wrong magic number in IDX file ",
               path, ": expected ", hex(kLabelsMagic), " (labels) or ", hex(kImagesMagic),
               " (images), got ", hex(magic));
  const int64_t dims = magic & 0xff;

  std::vector<int64_t> shape;
  int64_t total = 1;
  for (int64_t d = 0; d < dims; ++d) {
    got = file.read(word.data(), 4);
    FRUGAL_CHECK(got == 4, "truncated IDX file ", path, ": expected ", 4 * dims,
                 " bytes of dimensions after the magic number, got ", 4 * d + got,
                 file.zlib_error());
    const int64_t size = big_endian(word.data());
    shape.push_back(size);
    FRUGAL_CHECK(size == 0 || total <= kMaxElements / size, "unexpected dimensions in IDX file ",
                 path, ": ", c10::IntArrayRef(shape), " is too large");
    total *= size;
  }

  // Plain files must hold `total` bytes after the header; gzip'd ones can expand only so much.
  const int64_t header = 4 + 4 * dims;
  const bool plain = gzdirect(file.file) == 1;
  const int64_t limit = plain ? file_size - header : file_size * kMaxDeflateRatio;
  FRUGAL_CHECK(total <= limit, "truncated IDX file ", path, ": its header ",
               c10::IntArrayRef(shape), " needs ", total, " bytes of data, but the ",
               plain ? "file holds " : "compressed file can hold at most ", limit);

  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(at::kByte));
  got = file.read(out.data_ptr<uint8_t>(), total);
  FRUGAL_CHECK(got == total, "truncated IDX file ", path, ": expected ", total,
               " bytes of data for ", c10::IntArrayRef(shape), ", got ", got, file.zlib_error());
  unsigned char extra = 0;
  FRUGAL_CHECK(file.read(&extra, 1) == 0, "unexpected dimensions in IDX file ", path,
               ": it holds more data than its header ", c10::IntArrayRef(shape), " declares");
  return out;
}

FashionMnist FashionMnist::load(const std::string& dir) {
  FashionMnist data;
  data.train_ = load_split(dir, "train");
  data.test_ = load_split(dir, "t10k");
  return data;
}

std::shared_ptr<TensorLoader> FashionMnist::train_loader(int64_t batch_size, uint64_t seed) const {
  return std::make_shared<TensorLoader>(train_.images, train_.labels,
                                        TensorLoaderOptions(batch_size).shuffle(true).seed(seed));
}

std::shared_ptr<TensorLoader> FashionMnist::test_loader(int64_t batch_size) const {
  return std::make_shared<TensorLoader>(test_.images, test_.labels,
                                        TensorLoaderOptions(batch_size).pad_shards(false));
}

}  // namespace frugal::datasets
