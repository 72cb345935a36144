// The packed image cache: writing (parallel decode/resize/encode, written in order, atomically)
// and reading (memory-mapped, checked).
//
// Note [Packed cache layout]. All integers little-endian.
//   page 0: "FRUGALPK", u32 version (1), zeros to 4096;
//   data: the samples, from 4096 to the table (placement: see place());
//   table: 40 bytes per sample: u64 offset, u64 size, i64 label, u32 height, u32 width,
//     u32 CRC-32 of the sample's bytes, u16 channels, u8 format (ImageFormat; 0 raw), u8 zero;
//   strings: per class, then per sample path: u32 length + UTF-8 bytes;
//   trailer, the last 128 bytes (struct Header):
//     0 magic "FRUGALPK"        8 u32 version (1)        12 u32 page size (4096)
//     16 u64 file size          24 u64 samples            32 u64 classes
//     40 u64 table offset       48 u64 table size         56 u64 strings offset
//     64 u64 strings size       72 u32 table CRC-32       76 u32 strings CRC-32
//     80 u8 storage (1 JPEG, 2 raw)   81 u8 colour (0 RGB, 1 L)   82 u16 JPEG quality
//     84 u32 max side           88 u64 data offset        96 u64 data size
//     104 20 bytes zero         124 u32 CRC-32 of bytes [0, 124)
// Everything is streamed out in one pass as samples are encoded (the table and the trailer are
// known only at the end), into a temporary file renamed over the target when complete. A copy cut
// short loses its trailer, which page 0's magic lets the reader call a truncated cache rather
// than a foreign file.
#include "frugal/data/packed.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#ifdef FRUGAL_WITH_IMAGE_CODECS
#include <jpeglib.h>
#endif

#include <algorithm>
#include <atomic>
#include <csetjmp>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>

#include "data/pack_sample.h"
#include "frugal/data/transforms.h"
#include "frugal/error.h"
#include "frugal/io/checkpoint.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the packed cache is read in place");

namespace frugal {
namespace {

constexpr char kMagic[8] = {'F', 'R', 'U', 'G', 'A', 'L', 'P', 'K'};
constexpr uint32_t kVersion = 1;
constexpr uint64_t kPage = 4096;
constexpr size_t kHeaderSize = 128;
constexpr size_t kEntrySize = 40;

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t page_size;
  uint64_t file_size;
  uint64_t samples;
  uint64_t classes;
  uint64_t table_offset;
  uint64_t table_size;
  uint64_t strings_offset;
  uint64_t strings_size;
  uint32_t table_crc;
  uint32_t strings_crc;
  uint8_t storage;
  uint8_t color;
  uint16_t quality;
  uint32_t max_side;
  uint64_t data_offset;
  uint64_t data_size;
  uint8_t reserved[20];
  uint32_t header_crc;
};
static_assert(sizeof(Header) == kHeaderSize, "header layout");

uint32_t crc32_of(const uint8_t* data, size_t size) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes uInt lengths.
  while (size > 0) {
    const uInt n = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
    crc = crc32(crc, data, n);
    data += n;
    size -= n;
  }
  return static_cast<uint32_t>(crc);
}

template <typename T>
void put(std::vector<uint8_t>& out, T value) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &value, sizeof(T));
}

template <typename T>
T get(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

// Where a sample of `size` bytes starts when the previous one ended at `end`: larger than a page,
// on the next page; else at `end` unless that would straddle a page boundary.
uint64_t place(uint64_t end, uint64_t size) {
  const uint64_t next_page = (end + kPage - 1) / kPage * kPage;
  if (size > kPage) return next_page;
  if (end / kPage != (end + size - 1) / kPage && size > 0) return next_page;
  return end;
}

#ifdef FRUGAL_WITH_IMAGE_CODECS
struct JpegEncodeError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {0};
};

void jpeg_encode_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegEncodeError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// JPEG at `quality` with PIL's defaults (4:2:0 chroma subsampling for RGB, no optimisation).
std::vector<uint8_t> encode_jpeg(const Image& image, int quality, const std::string& name) {
  jpeg_compress_struct cinfo;
  JpegEncodeError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_encode_error_exit;
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    free(buffer);
    throw Error(detail::concat("write_packed: cannot encode '", name, "' as JPEG: ", err.message));
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(image.width);
  cinfo.image_height = static_cast<JDIMENSION>(image.height);
  cinfo.input_components = static_cast<int>(image.channels);
  cinfo.in_color_space = image.channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  const size_t stride = static_cast<size_t>(image.width * image.channels);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row =
        const_cast<uint8_t*>(image.pixels.data()) + cinfo.next_scanline * stride;  // NOLINT
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::vector<uint8_t> out(buffer, buffer + size);
  free(buffer);
  return out;
}
#else
std::vector<uint8_t> encode_jpeg(const Image&, int, const std::string& name) {
  throw Error(
      detail::concat("write_packed: cannot encode '", name, "': frugal was built without libjpeg"));
}
#endif

// PIL's RGB -> L (Convert.c, L24).
void to_gray(Image* image) {
  const size_t n = static_cast<size_t>(image->height * image->width);
  uint8_t* p = image->pixels.data();
  for (size_t i = 0; i < n; ++i) {
    p[i] = static_cast<uint8_t>(
        (p[3 * i] * 19595 + p[3 * i + 1] * 38470 + p[3 * i + 2] * 7471 + 0x8000) >> 16);
  }
  image->pixels.resize(n);
  image->channels = 1;
}

}  // namespace

namespace detail {

PackedSample pack_sample(const ImageSample& sample, const PackOptions& options) {
  PackedSample out;
  try {
    std::vector<uint8_t> source = read_file_bytes(sample.path);
    out.source_bytes = static_cast<int64_t>(source.size());
    const ImageFormat format = detect_image_format(source.data(), source.size());
    const ColorMode mode = options.storage == PackedStorage::kRaw ? options.color : ColorMode::kRGB;
    Image image = decode_image(source.data(), source.size(), mode, sample.path);
    const int64_t longer = std::max(image.height, image.width);
    const bool shrink = options.max_side > 0 && longer > options.max_side;
    if (shrink) {
      const double f = static_cast<double>(options.max_side) / static_cast<double>(longer);
      const int64_t h = std::max<int64_t>(1, std::llround(image.height * f));
      const int64_t w = std::max<int64_t>(1, std::llround(image.width * f));
      image = resize_bilinear(image, CropBox{0, 0, image.height, image.width}, h, w);
    }
    out.entry.label = sample.label;
    out.entry.height = static_cast<uint32_t>(image.height);
    out.entry.width = static_cast<uint32_t>(image.width);
    out.entry.channels = static_cast<uint16_t>(image.channels);
    if (options.storage == PackedStorage::kRaw) {
      out.bytes = std::move(image.pixels);
      out.entry.format = 0;
    } else if (format == ImageFormat::kJpeg && !shrink) {
      out.bytes = std::move(source);  // decoded at read time exactly as the file would be
      out.kept = true;
      out.entry.format = static_cast<uint8_t>(ImageFormat::kJpeg);
    } else {
      out.bytes = encode_jpeg(image, options.quality, sample.path);
      out.entry.format = static_cast<uint8_t>(ImageFormat::kJpeg);
    }
    out.entry.size = out.bytes.size();
    out.entry.crc32 = crc32_of(out.bytes.data(), out.bytes.size());
  } catch (const Error& e) {
    out.error = e.what();
  }
  return out;
}

}  // namespace detail

namespace {

void put_string(std::vector<uint8_t>& out, const std::string& s) {
  put<uint32_t>(out, static_cast<uint32_t>(s.size()));
  out.insert(out.end(), s.begin(), s.end());
}

}  // namespace

namespace detail {

void check_pack_input(const char* who, const std::string& path,
                      const std::vector<ImageSample>& samples,
                      const std::vector<std::string>& classes, const PackOptions& options) {
  FRUGAL_CHECK(!samples.empty(), who, ": no samples to pack into '", path, "'");
  FRUGAL_CHECK(!classes.empty(), who, ": no class names");
  FRUGAL_CHECK(options.storage == PackedStorage::kJpeg || options.storage == PackedStorage::kRaw,
               who, ": storage must be kJpeg or kRaw");
  FRUGAL_CHECK(options.max_side >= 0, who, ": max_side must be >= 0 (0: keep sizes), got ",
               options.max_side);
  FRUGAL_CHECK(options.quality >= 1 && options.quality <= 100, who,
               ": quality must be in [1, 100], got ", options.quality);
  FRUGAL_CHECK(options.threads >= 0, who, ": threads must be >= 0 (0: all CPUs), got ",
               options.threads);
  FRUGAL_CHECK(options.storage == PackedStorage::kRaw || options.color == ColorMode::kRGB, who,
               ": a JPEG cache stores RGB (pick the colour mode when reading); grayscale storage "
               "needs raw storage");
  for (const ImageSample& s : samples) {
    FRUGAL_CHECK(s.label >= 0 && s.label < static_cast<int64_t>(classes.size()), who, ": sample '",
                 s.path, "' has label ", s.label, ", expected [0, ", classes.size(),
                 ") (one per class name)");
  }
  ensure_writable_dir(std::filesystem::absolute(path).parent_path().string(), /*create=*/true, who);
}

void pack_samples(const char* who, const std::vector<ImageSample>& samples, const std::string& root,
                  const PackOptions& options, PackResult* result,
                  const std::function<void(const std::string& name, PackedSample& sample)>& emit) {
  const int64_t n = static_cast<int64_t>(samples.size());
  const int64_t threads = options.threads > 0
                              ? options.threads
                              : std::max<int64_t>(1, std::thread::hardware_concurrency());
  // Samples are prepared in chunks by `threads` workers, then emitted in order.
  const int64_t chunk = std::max<int64_t>(16, 8 * threads);
  const std::filesystem::path base(root);
  std::vector<PackedSample> prepared(static_cast<size_t>(chunk));
  for (int64_t first = 0; first < n; first += chunk) {
    const int64_t count = std::min(chunk, n - first);
    std::atomic<int64_t> cursor{0};
    auto work = [&] {
      for (int64_t k; (k = cursor.fetch_add(1)) < count;) {
        prepared[static_cast<size_t>(k)] = pack_sample(samples[first + k], options);
      }
    };
    std::vector<std::thread> pool;
    for (int64_t t = 1; t < std::min(threads, count); ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    for (int64_t k = 0; k < count; ++k) {
      PackedSample& p = prepared[static_cast<size_t>(k)];
      const ImageSample& sample = samples[first + k];
      result->source_bytes += p.source_bytes;
      if (!p.error.empty()) {
        FRUGAL_CHECK(options.skip_bad, who, ": ", p.error,
                     " (skip_bad / frugal-pack --skip-bad leaves such files out)");
        result->skipped.push_back(p.error);
      } else {
        std::string rel =
            base.empty() ? sample.path
                         : std::filesystem::path(sample.path).lexically_relative(base).string();
        if (rel.empty() || rel.rfind("..", 0) == 0) rel = sample.path;
        emit(rel, p);
        ++result->samples;
        if (p.kept) ++result->kept_encoded;
      }
      p = PackedSample();
      if (options.progress) options.progress(first + k + 1, n);
    }
  }
  FRUGAL_CHECK(result->samples > 0, who, ": every sample was bad; nothing to pack");
}

}  // namespace detail

PackResult write_packed(const std::string& path, const std::vector<ImageSample>& samples,
                        const std::vector<std::string>& classes, const std::string& root,
                        const PackOptions& options) {
  detail::check_pack_input("write_packed", path, samples, classes, options);
  PackResult result;
  std::vector<PackedEntry> entries;
  std::vector<std::string> paths;
  entries.reserve(samples.size());
  paths.reserve(samples.size());

  detail::write_atomically(path, [&](const std::function<void(const void*, size_t)>& sink) {
    uint64_t end = kPage;
    std::vector<uint8_t> zeros(kPage, 0);
    std::vector<uint8_t> lead(kPage, 0);  // page 0: the magic and version, for `file` and us
    std::memcpy(lead.data(), kMagic, sizeof(kMagic));
    std::memcpy(lead.data() + 8, &kVersion, sizeof(kVersion));
    sink(lead.data(), kPage);
    auto pad_to = [&](uint64_t offset) {
      while (end < offset) {
        const uint64_t k = std::min<uint64_t>(offset - end, kPage);
        sink(zeros.data(), static_cast<size_t>(k));
        end += k;
      }
    };
    detail::pack_samples("write_packed", samples, root, options, &result,
                         [&](const std::string& name, detail::PackedSample& p) {
                           const uint64_t at = place(end, p.entry.size);
                           pad_to(at);
                           p.entry.offset = at;
                           sink(p.bytes.data(), p.bytes.size());
                           end += p.bytes.size();
                           entries.push_back(p.entry);
                           paths.push_back(name);
                         });
    const uint64_t data_end = end;
    pad_to((end + 7) / 8 * 8);
    std::vector<uint8_t> table;
    table.reserve(entries.size() * kEntrySize);
    for (const PackedEntry& e : entries) {
      put<uint64_t>(table, e.offset);
      put<uint64_t>(table, e.size);
      put<int64_t>(table, e.label);
      put<uint32_t>(table, e.height);
      put<uint32_t>(table, e.width);
      put<uint32_t>(table, e.crc32);
      put<uint16_t>(table, e.channels);
      put<uint8_t>(table, e.format);
      put<uint8_t>(table, 0);
    }
    std::vector<uint8_t> strings;
    for (const std::string& c : classes) put_string(strings, c);
    for (const std::string& p : paths) put_string(strings, p);

    Header h{};
    std::memcpy(h.magic, kMagic, sizeof(kMagic));
    h.version = kVersion;
    h.page_size = kPage;
    h.samples = entries.size();
    h.classes = classes.size();
    h.data_offset = kPage;
    h.data_size = data_end - kPage;
    h.table_offset = end;
    h.table_size = table.size();
    h.strings_offset = end + table.size();
    h.strings_size = strings.size();
    h.file_size = h.strings_offset + h.strings_size + sizeof(Header);
    h.table_crc = crc32_of(table.data(), table.size());
    h.strings_crc = crc32_of(strings.data(), strings.size());
    h.storage = static_cast<uint8_t>(options.storage);
    h.color = options.color == ColorMode::kGray ? 1 : 0;
    h.quality = static_cast<uint16_t>(options.quality);
    h.max_side = static_cast<uint32_t>(options.max_side);
    h.header_crc = crc32_of(reinterpret_cast<const uint8_t*>(&h), offsetof(Header, header_crc));
    sink(table.data(), table.size());
    sink(strings.data(), strings.size());
    sink(&h, sizeof(h));
    result.file_bytes = static_cast<int64_t>(h.file_size);
  });
  return result;
}

// ---- reading ----

std::shared_ptr<const PackedFile> PackedFile::open(const std::string& path) {
  std::shared_ptr<PackedFile> file(new PackedFile());
  file->name_ = path;
  file->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  FRUGAL_CHECK(file->fd_ >= 0, "cannot open the packed cache '", path, "': ", std::strerror(errno));
  struct stat st {};
  FRUGAL_CHECK(::fstat(file->fd_, &st) == 0 && S_ISREG(st.st_mode), "the packed cache '", path,
               "' is not a regular file");
  file->bytes_ = static_cast<size_t>(st.st_size);
  FRUGAL_CHECK(file->bytes_ >= kPage + sizeof(Header), "'", path, "' is not a frugal packed cache",
               " (", file->bytes_, " bytes: too short to be one)");
  void* m = ::mmap(nullptr, file->bytes_, PROT_READ, MAP_SHARED, file->fd_, 0);
  FRUGAL_CHECK(m != MAP_FAILED, "cannot map the packed cache '", path, "': ", std::strerror(errno));
  file->mapping_ = m;
  file->data_ = static_cast<const uint8_t*>(m);
  file->parse();
  return file;
}

std::shared_ptr<const PackedFile> PackedFile::from_bytes(std::vector<uint8_t> bytes,
                                                         const std::string& name) {
  std::shared_ptr<PackedFile> file(new PackedFile());
  file->name_ = name;
  file->owned_ = std::move(bytes);
  file->data_ = file->owned_.data();
  file->bytes_ = file->owned_.size();
  FRUGAL_CHECK(file->bytes_ >= kPage + sizeof(Header), "'", name, "' is not a frugal packed cache",
               " (", file->bytes_, " bytes: too short to be one)");
  file->parse();
  return file;
}

PackedFile::~PackedFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, bytes_);
  if (fd_ >= 0) ::close(fd_);
}

void PackedFile::parse() {
  const std::string& f = name_;
  FRUGAL_CHECK(std::memcmp(data_, kMagic, sizeof(kMagic)) == 0, "'", f,
               "' is not a frugal packed cache (it does not start with FRUGALPK; make one with "
               "frugal-pack)");
  const uint32_t lead_version = get<uint32_t>(data_ + 8);
  FRUGAL_CHECK(lead_version == kVersion, "the packed cache '", f, "' has format version ",
               lead_version, "; this frugal reads version ", kVersion,
               " (rebuild it with this frugal's frugal-pack)");
  Header h;
  std::memcpy(&h, data_ + bytes_ - sizeof(Header), sizeof(Header));
  FRUGAL_CHECK(std::memcmp(h.magic, kMagic, sizeof(kMagic)) == 0, "the packed cache '", f,
               "' is truncated or incomplete: its trailer is missing (", bytes_,
               " bytes; rebuild it with frugal-pack, or copy it again)");
  const uint32_t crc = crc32_of(reinterpret_cast<const uint8_t*>(&h), offsetof(Header, header_crc));
  FRUGAL_CHECK(crc == h.header_crc, "the packed cache '", f,
               "' is damaged: its trailer fails its checksum");
  FRUGAL_CHECK(h.version == kVersion && h.page_size == kPage, "the packed cache '", f,
               "' has format version ", h.version, " / page size ", h.page_size,
               "; expected version ", kVersion, ", page size ", kPage);
  FRUGAL_CHECK(h.file_size == bytes_, "the packed cache '", f, "' has ", bytes_,
               " bytes, its trailer says ", h.file_size,
               " (truncated, or something appended: copy it again)");
  FRUGAL_CHECK(h.storage == static_cast<uint8_t>(PackedStorage::kJpeg) ||
                   h.storage == static_cast<uint8_t>(PackedStorage::kRaw),
               "the packed cache '", f, "' has an unknown storage kind ", int(h.storage));
  FRUGAL_CHECK(h.color <= 1, "the packed cache '", f, "' has an unknown colour mode ",
               int(h.color));
  const uint64_t body_end = bytes_ - sizeof(Header);
  // Regions in order, each inside the file (subtractions only: no overflow on hostile sizes).
  FRUGAL_CHECK(h.data_offset == kPage && h.data_size <= body_end - kPage &&
                   h.table_offset >= kPage + h.data_size && h.table_offset <= body_end &&
                   h.table_size <= body_end - h.table_offset &&
                   h.strings_offset == h.table_offset + h.table_size &&
                   h.strings_size == body_end - h.strings_offset,
               "the packed cache '", f, "' is damaged: its regions (data ", h.data_offset, "+",
               h.data_size, ", table ", h.table_offset, "+", h.table_size, ", strings ",
               h.strings_offset, "+", h.strings_size, ") do not fit its ", bytes_, " bytes");
  FRUGAL_CHECK(
      h.samples >= 1 && h.table_size / kEntrySize == h.samples && h.table_size % kEntrySize == 0,
      "the packed cache '", f, "' is damaged: ", h.samples, " samples but a table of ",
      h.table_size, " bytes (", kEntrySize, " per sample)");
  FRUGAL_CHECK(h.classes >= 1 && h.classes <= h.strings_size / 4, "the packed cache '", f,
               "' is damaged: ", h.classes, " classes");
  FRUGAL_CHECK(crc32_of(data_ + h.table_offset, h.table_size) == h.table_crc, "the packed cache '",
               f, "' is damaged: its sample table fails its checksum");
  FRUGAL_CHECK(crc32_of(data_ + h.strings_offset, h.strings_size) == h.strings_crc,
               "the packed cache '", f, "' is damaged: its names fail their checksum");
  storage_ = static_cast<PackedStorage>(h.storage);
  color_ = h.color == 1 ? ColorMode::kGray : ColorMode::kRGB;
  max_side_ = h.max_side;
  data_begin_ = h.data_offset;
  data_end_ = h.data_offset + h.data_size;

  const uint8_t* p = data_ + h.strings_offset;
  const uint8_t* const strings_end = p + h.strings_size;
  auto next_string = [&](const char* what, uint64_t i) {
    FRUGAL_CHECK(strings_end - p >= 4, "the packed cache '", f, "' is damaged: the ", what, " ", i,
                 " runs past the end of the names");
    const uint32_t len = get<uint32_t>(p);
    p += 4;
    FRUGAL_CHECK(static_cast<uint64_t>(strings_end - p) >= len, "the packed cache '", f,
                 "' is damaged: the ", what, " ", i, " runs past the end of the names");
    std::string s(reinterpret_cast<const char*>(p), len);
    p += len;
    return s;
  };
  classes_.reserve(h.classes);
  for (uint64_t c = 0; c < h.classes; ++c) classes_.push_back(next_string("class name", c));
  paths_.reserve(h.samples);
  for (uint64_t i = 0; i < h.samples; ++i) paths_.push_back(next_string("path of sample", i));
  FRUGAL_CHECK(p == strings_end, "the packed cache '", f,
               "' is damaged: bytes left over after the names");

  entries_.resize(h.samples);
  const uint8_t* t = data_ + h.table_offset;
  for (uint64_t i = 0; i < h.samples; ++i, t += kEntrySize) {
    PackedEntry& e = entries_[i];
    e.offset = get<uint64_t>(t);
    e.size = get<uint64_t>(t + 8);
    e.label = get<int64_t>(t + 16);
    e.height = get<uint32_t>(t + 24);
    e.width = get<uint32_t>(t + 28);
    e.crc32 = get<uint32_t>(t + 32);
    e.channels = get<uint16_t>(t + 36);
    e.format = t[38];
    const auto bad = [&](const std::string& what) {
      return Error(detail::concat("the packed cache '", f, "' is damaged: sample ", i, " ('",
                                  paths_[i], "') ", what));
    };
    if (e.offset < data_begin_ || e.offset > data_end_ || e.size > data_end_ - e.offset) {
      throw bad(
          detail::concat("lies outside the data (offset ", e.offset, ", ", e.size, " bytes)"));
    }
    if (e.label < 0 || e.label >= static_cast<int64_t>(h.classes)) {
      throw bad(detail::concat("has label ", e.label, " of ", h.classes, " classes"));
    }
    if (e.height == 0 || e.width == 0 || (e.channels != 1 && e.channels != 3)) {
      throw bad(detail::concat("has shape ", e.height, "x", e.width, "x", e.channels));
    }
    if (storage_ == PackedStorage::kRaw) {
      if (e.format != 0 || e.channels != (color_ == ColorMode::kGray ? 1 : 3) ||
          e.size != uint64_t{e.height} * e.width * e.channels) {
        throw bad(detail::concat("has ", e.size, " bytes, format ", int(e.format),
                                 " for raw pixels of ", e.height, "x", e.width, "x", e.channels));
      }
    } else if (e.format != static_cast<uint8_t>(ImageFormat::kJpeg)) {
      throw bad(detail::concat("has format ", int(e.format), ", expected JPEG"));
    }
  }
}

const PackedEntry& PackedFile::entry(int64_t index) const {
  FRUGAL_CHECK(index >= 0 && index < size(), "the packed cache '", name_, "' has ", size(),
               " samples; sample ", index, " asked for");
  return entries_[static_cast<size_t>(index)];
}

double PackedFile::mean_sample_bytes() const {
  return static_cast<double>(data_end_ - data_begin_) / static_cast<double>(entries_.size());
}

std::string PackedFile::describe_sample(int64_t index) const {
  return detail::concat("sample ", index, " ('", paths_[static_cast<size_t>(index)],
                        "') of the packed cache '", name_, "'");
}

std::string PackedFile::sample_name(int64_t index) const {
  entry(index);
  return paths_[static_cast<size_t>(index)];
}

std::pair<const uint8_t*, size_t> PackedFile::bytes(int64_t index) const {
  const PackedEntry& e = entry(index);
  if (fd_ >= 0) {
    // Touching a mapped page past the end of a file that shrank is SIGBUS, not an error: catch
    // the common case (the file overwritten in place between epochs) for the price of a fstat.
    struct stat st {};
    FRUGAL_CHECK(::fstat(fd_, &st) == 0 && static_cast<uint64_t>(st.st_size) >= bytes_,
                 "the packed cache '", name_, "' shrank from ", bytes_, " to ", st.st_size,
                 " bytes while being read (overwritten in place? frugal-pack replaces a cache "
                 "by renaming a new file over it, which running readers never see)");
  }
  const uint8_t* p = data_ + e.offset;
  FRUGAL_CHECK(crc32_of(p, e.size) == e.crc32, describe_sample(index),
               " fails its checksum: the cache is damaged (rebuild it with frugal-pack)");
  return {p, static_cast<size_t>(e.size)};
}

Image PackedFile::read(int64_t index, ColorMode mode) const {
  const auto [p, n] = bytes(index);
  const PackedEntry& e = entries_[static_cast<size_t>(index)];
  if (storage_ == PackedStorage::kJpeg) {
    return decode_image(p, n, mode, detail::concat(name_, ":", paths_[static_cast<size_t>(index)]));
  }
  Image image;
  image.height = e.height;
  image.width = e.width;
  image.channels = e.channels;
  image.pixels.assign(p, p + n);
  if (mode == ColorMode::kGray && image.channels == 3) {
    to_gray(&image);
  } else if (mode == ColorMode::kRGB && image.channels == 1) {
    std::vector<uint8_t> rgb(image.pixels.size() * 3);
    for (size_t i = 0; i < image.pixels.size(); ++i) {
      rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = image.pixels[i];
    }
    image.pixels = std::move(rgb);
    image.channels = 3;
  }
  return image;
}

Image SampleStore::read_transformed(int64_t index, ColorMode mode, const Transform& transform,
                                    SampleRng& rng) const {
  return transform.apply(read(index, mode), rng);
}

Image PackedFile::read_transformed(int64_t index, ColorMode mode, const Transform& transform,
                                   SampleRng& rng) const {
  if (storage_ != PackedStorage::kJpeg) return transform.apply(read(index, mode), rng);
  const auto [p, n] = bytes(index);
  return transform.apply_encoded(
      p, n, mode, detail::concat(name_, ":", paths_[static_cast<size_t>(index)]), rng);
}

void PackedFile::verify() const {
  for (int64_t i = 0; i < size(); ++i) bytes(i);
}

}  // namespace frugal
