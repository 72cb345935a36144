#include "io/checksum.h"

#include <openssl/evp.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <vector>

#include "frugal/error.h"

namespace frugal::detail {

// Note [Checkpoint checksums]: a zip file ends with its end-of-central-directory record (EOCD):
// 22 bytes, the last two of which give the length of an optional comment that follows. LibTorch
// writes no comment. frugal writes the archive as LibTorch makes it, then sets the comment to
// "frugal-sha256:<64 hex digits>", the SHA-256 of every byte before the comment-length field (so
// the records, the central directory and the rest of the EOCD are all covered). Zip readers,
// LibTorch's and Python's included, accept comments, so the file stays an ordinary archive.
// Loading reads the file through once, hashes it and compares. A file whose tail does not hold
// the marker has no checksum: it is older than checksums, and loads with a warning. A flip in
// the marker itself can only make a file look unchecked, never change what loads from it.

namespace {

constexpr size_t kEocdSize = 22;
constexpr char kMarker[] = "frugal-sha256:";
constexpr size_t kMarkerSize = sizeof(kMarker) - 1;
constexpr size_t kCommentSize = kMarkerSize + 64;
// The comment-length field and the comment: what the digest does not cover.
constexpr size_t kTrailerSize = 2 + kCommentSize;

using MdCtx = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

MdCtx new_sha256() {
  MdCtx ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  FRUGAL_CHECK(ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1,
               "cannot initialise SHA-256");
  return ctx;
}

std::string hex_digest(EVP_MD_CTX* ctx) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_DigestFinal_ex(ctx, digest, &size);
  std::string out;
  char byte[3];
  for (unsigned int i = 0; i < size; ++i) {
    std::snprintf(byte, sizeof(byte), "%02x", digest[i]);
    out += byte;
  }
  return out;
}

}  // namespace

struct ChecksummedZipWriter::Impl {
  explicit Impl(Sink s) : sink(std::move(s)), ctx(new_sha256()) {}
  Sink sink;
  MdCtx ctx;
  std::vector<unsigned char> tail;  // the last kEocdSize bytes seen, not yet passed on
};

ChecksummedZipWriter::ChecksummedZipWriter(Sink sink) : impl_(new Impl(std::move(sink))) {}
ChecksummedZipWriter::~ChecksummedZipWriter() { delete impl_; }

void ChecksummedZipWriter::write(const void* data, size_t size) {
  auto& tail = impl_->tail;
  const auto* bytes = static_cast<const unsigned char*>(data);
  tail.insert(tail.end(), bytes, bytes + size);
  if (tail.size() <= kEocdSize) return;
  const size_t ready = tail.size() - kEocdSize;
  EVP_DigestUpdate(impl_->ctx.get(), tail.data(), ready);
  impl_->sink(tail.data(), ready);
  tail.erase(tail.begin(), tail.begin() + static_cast<std::ptrdiff_t>(ready));
}

void ChecksummedZipWriter::finish(const std::string& path) {
  auto& tail = impl_->tail;
  FRUGAL_CHECK(tail.size() == kEocdSize && std::memcmp(tail.data(), "PK\x05\x06", 4) == 0 &&
                   tail[20] == 0 && tail[21] == 0,
               "cannot write '", path,
               "': the archive LibTorch produced does not end with a plain zip directory record");
  EVP_DigestUpdate(impl_->ctx.get(), tail.data(), kEocdSize - 2);
  const std::string comment = kMarker + hex_digest(impl_->ctx.get());
  tail[20] = static_cast<unsigned char>(comment.size() & 0xff);
  tail[21] = static_cast<unsigned char>(comment.size() >> 8);
  impl_->sink(tail.data(), tail.size());
  impl_->sink(comment.data(), comment.size());
  tail.clear();
}

ChecksumStatus verify_checksum(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  FRUGAL_CHECK(in.good(), "cannot open checkpoint ", path);
  in.seekg(0, std::ios::end);
  const auto size = static_cast<size_t>(in.tellg());
  if (size < kEocdSize + kCommentSize) return ChecksumStatus::kAbsent;
  std::array<char, kEocdSize + kCommentSize> end{};
  in.seekg(static_cast<std::streamoff>(size - end.size()));
  in.read(end.data(), static_cast<std::streamsize>(end.size()));
  const char* eocd = end.data();
  const char* comment = eocd + kEocdSize;
  const bool marked = std::memcmp(eocd, "PK\x05\x06", 4) == 0 &&
                      static_cast<unsigned char>(eocd[20]) == kCommentSize && eocd[21] == 0 &&
                      std::memcmp(comment, kMarker, kMarkerSize) == 0;
  if (!marked) return ChecksumStatus::kAbsent;
  const std::string recorded(comment + kMarkerSize, 64);

  MdCtx ctx = new_sha256();
  in.seekg(0);
  std::vector<char> buffer(size_t{1} << 20);
  size_t left = size - kTrailerSize;
  while (left > 0) {
    const size_t n = std::min(left, buffer.size());
    in.read(buffer.data(), static_cast<std::streamsize>(n));
    FRUGAL_CHECK(static_cast<size_t>(in.gcount()) == n, "cannot read checkpoint ", path,
                 ": it ended early while its checksum was checked");
    EVP_DigestUpdate(ctx.get(), buffer.data(), n);
    left -= n;
  }
  const std::string actual = hex_digest(ctx.get());
  FRUGAL_CHECK(actual == recorded, "checkpoint ", path,
               " is corrupt: its contents do not match the SHA-256 recorded when it was written ",
               "(recorded ", recorded.substr(0, 12), "..., now ", actual.substr(0, 12),
               "...): a byte was changed or lost on disk or in transfer, so it cannot be trusted");
  return ChecksumStatus::kVerified;
}

}  // namespace frugal::detail
