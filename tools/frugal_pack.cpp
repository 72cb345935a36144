// frugal-pack: builds a packed image cache (include/frugal/data/packed.h, docs/data.md) from an
// image folder or a list file, once, so that training reads one memory-mapped file instead of
// walking the folder and decoding full-size images every epoch.
//
//   frugal-pack --data data/train --out train.fpk                 # JPEG, sizes kept
//   frugal-pack --data data/train --out train.fpk --max-side 320  # shrink the large ones
//   frugal-pack --data data/train --out train.raw.fpk --storage raw --max-side 160
//   frugal-pack --list files.csv --out train.fpk                  # `path,label` rows
//   frugal-pack --data data/train --out train.lmdb --format lmdb  # an LMDB database instead
//   frugal-pack --info train.fpk        # what a cache holds
//   frugal-pack --verify train.fpk      # every sample's checksum
//
// Exits 1 with a message naming the file or option on any error, and then leaves no cache
// behind (the file is written under a temporary name and renamed when complete).
#include <frugal/data/image_folder.h>
#include <frugal/data/lmdb.h>
#include <frugal/data/packed.h>
#include <frugal/error.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <string>

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void print_info(const frugal::PackedFile& cache) {
  std::printf(
      "%s: %lld samples, %zu classes, %s storage%s, max side %lld, %.1f MiB (%.1f KiB per "
      "sample)\n",
      cache.name().c_str(), static_cast<long long>(cache.size()), cache.classes().size(),
      cache.storage() == frugal::PackedStorage::kJpeg ? "JPEG" : "raw",
      cache.storage() == frugal::PackedStorage::kRaw &&
              cache.stored_color() == frugal::ColorMode::kGray
          ? " (grayscale)"
          : "",
      static_cast<long long>(cache.max_side()), cache.file_bytes() / 1048576.0,
      cache.mean_sample_bytes() / 1024.0);
  std::vector<int64_t> per_class(cache.classes().size(), 0);
  for (int64_t i = 0; i < cache.size(); ++i) ++per_class[cache.entry(i).label];
  for (size_t c = 0; c < per_class.size(); ++c) {
    std::printf("class\t%zu\t%s\t%lld samples\n", c, cache.classes()[c].c_str(),
                static_cast<long long>(per_class[c]));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string data, list, out, info, verify, storage = "jpeg", format = "packed";
  int64_t max_side = 0, threads = 0;
  int quality = 90;
  bool gray = false, skip_bad = false, quiet = false;
  CLI::App app{"Pack an image folder (or a list file) into one cache file that frugal memory-maps"};
  app.add_option("--data", data, "image folder of class sub-folders (torchvision's ImageFolder)");
  app.add_option("--list", list,
                 "CSV of path,label rows instead of --data (paths relative to "
                 "--data if given, else to the list's folder)");
  app.add_option("--out", out, "the cache file to write");
  app.add_option("--format", format,
                 "packed (one memory-mapped file) or lmdb (an LMDB database file, JPEG storage)")
      ->capture_default_str();
  app.add_option("--storage", storage,
                 "jpeg (JPEG sources kept byte for byte unless shrunk) or "
                 "raw (decoded pixels: no decoding when read, ~10x bytes)")
      ->capture_default_str();
  app.add_option("--max-side", max_side, "shrink images whose longer side exceeds this (0: keep)")
      ->capture_default_str();
  app.add_option("--quality", quality, "JPEG quality of re-encoded images")->capture_default_str();
  app.add_flag("--gray", gray, "raw storage: store one channel (PIL's convert(\"L\"))");
  app.add_option("--threads", threads, "decode/encode threads (0: all CPUs)")
      ->capture_default_str();
  app.add_flag("--skip-bad", skip_bad, "leave unreadable files out (listed) instead of stopping");
  app.add_flag("--quiet", quiet, "no progress line");
  app.add_option("--info", info, "print what an existing cache holds and exit");
  app.add_option("--verify", verify, "check every sample's checksum of a cache and exit");
  CLI11_PARSE(app, argc, argv);

  try {
    if (!info.empty() || !verify.empty()) {
      const auto cache = frugal::PackedFile::open(info.empty() ? verify : info);
      print_info(*cache);
      if (!verify.empty()) {
        const auto t0 = std::chrono::steady_clock::now();
        cache->verify();
        std::printf("verified %lld samples in %.2f s: every checksum matches\n",
                    static_cast<long long>(cache->size()), seconds_since(t0));
      }
      return 0;
    }
    if (out.empty()) throw frugal::Error("--out is required (the cache file to write)");
    if (data.empty() && list.empty()) {
      throw frugal::Error("give --data DIR (an image folder) or --list FILE (CSV of path,label)");
    }
    if (format != "packed" && format != "lmdb") {
      throw frugal::Error("--format must be packed or lmdb, got \"" + format + "\"");
    }
    if (storage != "jpeg" && storage != "raw") {
      throw frugal::Error("--storage must be jpeg or raw, got \"" + storage + "\"");
    }
    if (gray && storage != "raw") {
      throw frugal::Error("--gray needs --storage raw (a JPEG cache is read in either mode)");
    }
    std::vector<frugal::ImageSample> samples;
    std::vector<std::string> classes;
    std::string root = data;
    if (!list.empty()) {
      samples = frugal::read_image_list(list, data);
      if (root.empty()) root = std::filesystem::path(list).parent_path().string();
      int64_t max_label = 0;
      for (const auto& s : samples) max_label = std::max(max_label, s.label);
      for (int64_t c = 0; c <= max_label; ++c) classes.push_back(std::to_string(c));
    } else {
      frugal::ImageFolder folder(data);
      samples = folder.samples();
      classes = folder.classes();
    }
    frugal::PackOptions options;
    options.storage = storage == "raw" ? frugal::PackedStorage::kRaw : frugal::PackedStorage::kJpeg;
    options.max_side = max_side;
    options.quality = quality;
    options.color = gray ? frugal::ColorMode::kGray : frugal::ColorMode::kRGB;
    options.threads = threads;
    options.skip_bad = skip_bad;
    const auto t0 = std::chrono::steady_clock::now();
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    double last = -1;
    if (!quiet) {
      options.progress = [&](int64_t done, int64_t total) {
        const double t = seconds_since(t0);
        // A live line on a terminal (10 per second); a line every 5 s in a log.
        if (done != total && t - last < (tty ? 0.1 : 5.0)) return;
        last = t;
        const double rate = done / std::max(t, 1e-9);
        std::fprintf(stderr, "%spacking %lld/%lld images (%.0f%%), %.0f images/s, %.0f s left%s",
                     tty ? "\r" : "", static_cast<long long>(done), static_cast<long long>(total),
                     100.0 * done / total, rate, (total - done) / std::max(rate, 1e-9),
                     tty && done != total ? "" : "\n");
      };
    }
    const frugal::PackResult r = format == "lmdb"
                                     ? frugal::write_lmdb(out, samples, classes, root, options)
                                     : frugal::write_packed(out, samples, classes, root, options);
    std::printf(
        "wrote %s: %lld samples, %.1f MiB from %.1f MiB of files (%lld JPEGs kept as they "
        "were), %.1f s\n",
        out.c_str(), static_cast<long long>(r.samples), r.file_bytes / 1048576.0,
        r.source_bytes / 1048576.0, static_cast<long long>(r.kept_encoded), seconds_since(t0));
    if (!r.skipped.empty()) {
      std::printf("left out %zu unreadable files:\n", r.skipped.size());
      for (const auto& s : r.skipped) std::printf("  %s\n", s.c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "frugal-pack: error: " << e.what() << "\n";
    return 1;
  }
}
