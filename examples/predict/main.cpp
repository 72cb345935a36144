// Predictions for Fashion-MNIST's test images with a trained model, written as CSV.
//
//   build/examples/fashion_mnist/fashion_mnist --model cnn --max-epochs 2   # writes checkpoints
//   build/examples/predict/predict --model cnn \
//       --weights frugal_logs/checkpoints/last.ckpt --out predictions.csv --top-k 3
//   build/examples/predict/predict --torchscript model.pt --out predictions.csv
//   build/examples/predict/predict --model cnn --weights last.ckpt --images photos/ --out p.csv
//   build/examples/predict/predict --model cnn --weights last.ckpt --write-int8 cnn.int8
//   build/examples/predict/predict --int8 cnn.int8 --out predictions.csv
//
// --write-int8 FILE quantizes the model to static int8 (frugal::quantize_static, calibrated on
// 640 training images), saves it and predicts with it; --int8 FILE predicts with such a file.
//
// One row per image: index (or, with --images, the file's path relative to DIR), label (and its
// name), then top-k classes, names and probabilities. --images DIR predicts image files instead
// of the IDX test set: a folder of class sub-folders (labelled as ImageFolder orders them: name
// them 0..9) or any folder of images (unlabelled: no label columns), decoded as gray, resized and
// centre-cropped to --image-size (28) and normalized as Fashion-MNIST is. The file is written
// atomically.
#include <fmt/format.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>

#include "frugal/data/datasets/mnist.h"
#include "frugal/data/image_folder.h"
#include "frugal/deploy/predictor.h"
#include "frugal/deploy/quantized_model.h"
#include "frugal/error.h"
#include "frugal/loggers/logger.h"
#include "frugal/models/small.h"

namespace {

const char* const kClassNames[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                   "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

torch::nn::Sequential make_model(const std::string& name) {
  if (name == "cnn") return frugal::models::SmallCnn();
  if (name == "cnn-bn") return frugal::models::SmallCnnBn();
  if (name == "mlp") return frugal::models::Mlp();
  FRUGAL_CHECK(false, "--model must be cnn, cnn-bn or mlp, got '", name, "'");
  return nullptr;
}

// Every image file under `dir` (torchvision's extensions), sorted by path.
std::vector<std::string> image_files(const std::string& dir) {
  namespace fs = std::filesystem;
  FRUGAL_CHECK(fs::is_directory(dir), "--images ", dir, ": no such folder");
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
    const auto& known = frugal::default_image_extensions();
    if (std::find(known.begin(), known.end(), ext) != known.end()) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  FRUGAL_CHECK(!out.empty(), "--images ", dir, ": no image files (", "jpg, png, ...)");
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fashion-MNIST test-set predictions of a trained model, as CSV"};
  std::string model = "cnn", weights, torchscript, int8, write_int8, out = "predictions.csv";
  std::string precision = "32";
  std::string data_dir = frugal::datasets::FashionMnist::kDefaultDir, images;
  int64_t top_k = 3, batch_size = 256, limit = 0, image_size = 28;
  int num_threads = 0;
  bool channels_last = false;
  app.add_option("--model", model, "cnn, cnn-bn or mlp (with --weights)")->capture_default_str();
  app.add_option("--weights", weights, "frugal checkpoint or torch::save archive of the model");
  app.add_option("--torchscript", torchscript, "a TorchScript file instead of --model/--weights");
  app.add_option("--int8", int8, "an int8 model (written by --write-int8 or QuantizedModel::save)");
  app.add_option("--write-int8", write_int8,
                 "with --weights: quantize the model to static int8 (calibrated on 640 training "
                 "images), write it to this file and predict with it");
  app.add_option("--data-dir", data_dir, "folder with the IDX files")->capture_default_str();
  app.add_option("--images", images, "predict the image files under this folder instead");
  app.add_option("--image-size", image_size, "with --images: the side the model sees")
      ->capture_default_str();
  app.add_option("--out", out, "CSV file to write")->capture_default_str();
  app.add_option("--top-k", top_k, "classes per image")->capture_default_str();
  app.add_option("--batch-size", batch_size)->capture_default_str();
  app.add_option("--limit", limit, "only the first n test images (0: all)");
  app.add_option("--precision", precision, "32, bf16-mixed or 16-mixed")->capture_default_str();
  app.add_flag("--channels-last", channels_last);
  app.add_option("--num-threads", num_threads, "LibTorch intra-op threads (0: all cores)");
  CLI11_PARSE(app, argc, argv);
  try {
    FRUGAL_CHECK((!weights.empty()) + (!torchscript.empty()) + (!int8.empty()) == 1,
                 "give exactly one of --weights, --torchscript and --int8");
    FRUGAL_CHECK(write_int8.empty() || !weights.empty(), "--write-int8 needs --weights");
    FRUGAL_CHECK((int8.empty() && write_int8.empty()) || (precision == "32" && !channels_last),
                 "an int8 model runs with --precision 32 and without --channels-last");
    FRUGAL_CHECK(limit >= 0, "--limit must be >= 0, got ", limit);
    if (num_threads > 0) at::set_num_threads(num_threads);
    auto options = frugal::PredictorOptions()
                       .batch_size(batch_size)
                       .precision(frugal::parse_precision(precision))
                       .channels_last(channels_last);
    // Fashion-MNIST, read once if at all (calibration for --write-int8, the IDX test images).
    std::optional<frugal::datasets::FashionMnist> fashion;
    auto dataset = [&]() -> const frugal::datasets::FashionMnist& {
      if (!fashion) fashion = frugal::datasets::FashionMnist::load(data_dir);
      return *fashion;
    };
    auto make_predictor = [&]() -> frugal::Predictor {
      if (!torchscript.empty()) return frugal::Predictor::load_torchscript(torchscript, options);
      if (!int8.empty()) return frugal::Predictor(frugal::load_quantized_model(int8), options);
      torch::nn::Sequential net = make_model(model);
      frugal::Predictor loaded = frugal::Predictor::load(net, weights, options);
      if (write_int8.empty()) return loaded;
      // Static int8, calibrated on the first 10 batches of 64 training images.
      std::vector<at::Tensor> calibration;
      for (int64_t i = 0; i < 10; ++i)
        calibration.push_back(dataset().train().images.slice(0, 64 * i, 64 * (i + 1)));
      frugal::QuantizedModel q = frugal::quantize_static(*net, calibration);
      q->save(write_int8);
      fmt::print("int8 model ({} engine, {} int8 / {} float operators) written to {}\n",
                 q->engine(), q->int8_ops(), q->float_ops(), write_int8);
      return frugal::Predictor(q, options);
    };
    frugal::Predictor predictor = make_predictor();
    frugal::Predictions p;
    std::vector<std::string> row_names;  // --images: the files, relative to the folder
    if (!images.empty()) {
      FRUGAL_CHECK(image_size >= 1, "--image-size must be >= 1, got ", image_size);
      const auto input =
          frugal::ImageInputOptions(image_size, image_size)
              .transform(frugal::compose({std::make_shared<frugal::Resize>(image_size),
                                          std::make_shared<frugal::CenterCrop>(image_size)}))
              .color(frugal::ColorMode::kGray)
              .mean({frugal::datasets::FashionMnist::kMean})
              .std({frugal::datasets::FashionMnist::kStd});
      std::vector<frugal::ImageSample> samples;
      try {
        samples = frugal::ImageFolder(images).samples();  // class sub-folders: labelled
      } catch (const frugal::Error&) {
        for (const std::string& f : image_files(images)) samples.push_back({f, -1});
      }
      if (limit > 0 && static_cast<int64_t>(samples.size()) > limit) samples.resize(limit);
      for (const auto& s : samples) {
        row_names.push_back(std::filesystem::path(s.path).lexically_relative(images).string());
      }
      p = predictor.predict_images(samples, input, top_k);
    } else {
      const frugal::datasets::Split& test = dataset().test();
      const int64_t count = limit > 0 ? std::min(limit, test.images.size(0)) : test.images.size(0);
      frugal::TensorLoader source(test.images.slice(0, 0, count), test.labels.slice(0, 0, count),
                                  frugal::TensorLoaderOptions(batch_size));
      p = predictor.predict(source, top_k);
    }
    const int64_t n = p.probabilities.size(0);
    const bool labelled = p.targets.defined();

    std::string csv = row_names.empty() ? "index" : "path";
    if (labelled) csv += ",label,label_name";
    for (int64_t k = 1; k <= top_k; ++k) {
      csv += fmt::format(",top{0},top{0}_name,top{0}_probability", k);
    }
    csv += "\n";
    auto name = [](int64_t c) {
      return c >= 0 && c < 10 ? std::string(kClassNames[c]) : std::to_string(c);
    };
    for (int64_t i = 0; i < n; ++i) {
      csv += row_names.empty() ? std::to_string(i)
                               : frugal::detail::csv_cell(row_names[static_cast<size_t>(i)]);
      if (labelled) {
        const int64_t label = p.targets[i].item<int64_t>();
        csv += fmt::format(",{},{}", label, frugal::detail::csv_cell(name(label)));
      }
      for (int64_t k = 0; k < top_k; ++k) {
        const int64_t c = p.top_indices[i][k].item<int64_t>();
        csv += fmt::format(",{},{},{:.6f}", c, frugal::detail::csv_cell(name(c)),
                           p.top_probabilities[i][k].item<float>());
      }
      csv += "\n";
    }
    frugal::detail::write_file_atomically(out, csv);
    if (labelled) {
      fmt::print("{} predictions written to {}; top-1 accuracy {:.4f}\n", n, out, p.accuracy());
    } else {
      fmt::print("{} predictions written to {}\n", n, out);
    }
  } catch (const frugal::Error& e) {
    fmt::print(stderr, "predict: {}\n", e.what());
    return 1;
  }
  return 0;
}
