// Where a JPEG sample's time goes, per image on one core (thread CPU time, so a loaded machine
// changes it little): decode_image alone, RandomResizedCrop(224) + flip on the decoded image, the
// old loader path (decode_image, then apply), apply_encoded with crop-region decoding (exact) and
// with JpegScaling::kDctScaled; then, with --loader-threads, the ImageLoader's images/s with each
// JpegScaling. Prints one JSON line (docs/performance.md, "Data pipeline").
#include <fmt/format.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <ctime>
#include <string>

#include "bench_support.h"
#include "frugal/data/image_folder.h"
#include "frugal/data/image_loader.h"

namespace {
double thread_cpu_s() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double wall_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

frugal::TransformPtr augment(frugal::JpegScaling jpeg) {
  return frugal::compose({std::make_shared<frugal::RandomResizedCrop>(
                              224, std::pair{0.08, 1.0}, std::pair{3.0 / 4.0, 4.0 / 3.0}, jpeg),
                          std::make_shared<frugal::RandomHorizontalFlip>()});
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app("frugal per-image costs of the JPEG paths");
  std::string data;
  int64_t repeats = 3, loader_threads = 0, batch = 256;
  app.add_option("--data", data, "image folder (class sub-folders)")->required();
  app.add_option("--repeats", repeats, "passes over the folder per path (the median is printed)");
  app.add_option("--loader-threads", loader_threads,
                 "also time the ImageLoader (2 epochs after a warm-up) with this many threads");
  app.add_option("--batch", batch, "the loader's batch size");
  CLI11_PARSE(app, argc, argv);
  at::set_num_threads(1);

  frugal::ImageFolder folder(data);
  std::vector<std::vector<uint8_t>> files;
  for (const auto& s : folder.samples()) files.push_back(frugal::read_file_bytes(s.path));
  const auto exact = augment(frugal::JpegScaling::kExact);
  const auto scaled = augment(frugal::JpegScaling::kDctScaled);
  std::vector<frugal::Image> decoded;
  const auto mode = frugal::ColorMode::kRGB;

  // Microseconds per image of `step(i, repeat)`, the median of `repeats` passes.
  auto time_us = [&](auto&& step) {
    std::vector<double> per_image;
    for (int64_t r = 0; r < repeats; ++r) {
      const double t0 = thread_cpu_s();
      for (size_t i = 0; i < files.size(); ++i) step(i, r);
      per_image.push_back(1e6 * (thread_cpu_s() - t0) / static_cast<double>(files.size()));
    }
    return frugal::bench::median(per_image);
  };
  uint64_t sink = 0;
  const double decode_us = time_us([&](size_t i, int64_t r) {
    frugal::Image im = frugal::decode_image(files[i].data(), files[i].size(), mode, "f");
    sink += im.pixels[0];
    if (r == 0) decoded.push_back(std::move(im));
  });
  const double transform_us = time_us([&](size_t i, int64_t r) {
    frugal::SampleRng rng(0, r, static_cast<int64_t>(i));
    sink += exact->apply(decoded[i], rng).pixels[0];
  });
  decoded.clear();
  const double decode_apply_us = time_us([&](size_t i, int64_t r) {
    frugal::SampleRng rng(0, r, static_cast<int64_t>(i));
    sink += exact->apply(frugal::decode_image(files[i].data(), files[i].size(), mode, "f"), rng)
                .pixels[0];
  });
  const double encoded_us = time_us([&](size_t i, int64_t r) {
    frugal::SampleRng rng(0, r, static_cast<int64_t>(i));
    sink += exact->apply_encoded(files[i].data(), files[i].size(), mode, "f", rng).pixels[0];
  });
  const double dct_us = time_us([&](size_t i, int64_t r) {
    frugal::SampleRng rng(0, r, static_cast<int64_t>(i));
    sink += scaled->apply_encoded(files[i].data(), files[i].size(), mode, "f", rng).pixels[0];
  });

  std::string loader_json;
  if (loader_threads > 0) {
    for (auto [name, tf] : {std::pair{"exact", exact}, std::pair{"dct_scaled", scaled}}) {
      frugal::ImageLoader loader(
          folder.samples(), tf, 224, 224,
          frugal::ImageLoaderOptions(batch).shuffle(true).seed(0).threads(loader_threads));
      double start = 0;
      int64_t images = 0;
      for (int64_t e = 0; e < 3; ++e) {
        if (e == 1) start = wall_s();
        loader.start_epoch(e);
        while (auto b = loader.next()) images += e >= 1 ? b->size() : 0;
      }
      loader_json += fmt::format(", \"loader_{}_images_per_s\": {:.1f}", name,
                                 static_cast<double>(images) / (wall_s() - start));
    }
  }
  fmt::print(
      "{{\"images\": {}, \"decode_us\": {:.0f}, \"crop_flip_us\": {:.0f}, "
      "\"decode_then_apply_us\": {:.0f}, \"apply_encoded_exact_us\": {:.0f}, "
      "\"apply_encoded_dct_scaled_us\": {:.0f}{}, \"sink\": {}}}\n",
      files.size(), decode_us, transform_us, decode_apply_us, encoded_us, dct_us, loader_json,
      sink % 10);
  return 0;
}
