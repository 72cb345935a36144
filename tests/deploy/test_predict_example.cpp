// examples/predict: the CSV it writes for Fashion-MNIST test images (weights from a torch::save
// archive) holds the classes and probabilities frugal::Predictor computes in-process; bad
// arguments give an error and no file.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "frugal/data/datasets/mnist.h"
#include "frugal/deploy/predictor.h"
#include "frugal/models/small.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

int run(const std::string& args, std::string* output = nullptr) {
  const std::string cmd = std::string(FRUGAL_PREDICT_EXAMPLE) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string log;
  char buffer[4096];
  while (fgets(buffer, sizeof buffer, pipe) != nullptr) log += buffer;
  const int raw = pclose(pipe);
  if (output != nullptr) *output = log;
  return WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
}

std::vector<std::vector<std::string>> read_csv(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::vector<std::string>> rows;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::string cell;
    bool quoted = false;
    for (char c : line) {
      if (c == '"') {
        quoted = !quoted;
      } else if (c == ',' && !quoted) {
        cells.push_back(cell);
        cell.clear();
      } else {
        cell += c;
      }
    }
    cells.push_back(cell);
    rows.push_back(cells);
  }
  return rows;
}

}  // namespace

TEST(PredictExample, CsvMatchesThePredictor) {
  if (!fs::exists(std::string(frugal::datasets::FashionMnist::kDefaultDir))) {
    GTEST_SKIP() << "Fashion-MNIST is not installed (dataset-fashion-mnist)";
  }
  const std::string dir = frugal::testing::temp_dir("predict_example");
  torch::manual_seed(3);
  torch::nn::Sequential net = frugal::models::SmallCnn();
  torch::save(net, dir + "/cnn.pt");
  std::string log;
  ASSERT_EQ(run("--model cnn --weights " + dir + "/cnn.pt --out " + dir +
                    "/p.csv --limit 37 --top-k 2 --batch-size 16",
                &log),
            0)
      << log;
  const auto rows = read_csv(dir + "/p.csv");
  ASSERT_EQ(rows.size(), 38u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"index", "label", "label_name", "top1", "top1_name",
                                               "top1_probability", "top2", "top2_name",
                                               "top2_probability"}));
  const auto data = frugal::datasets::FashionMnist::load();
  frugal::Predictor predictor(net);
  frugal::Predictions p = predictor.predict(data.test().images.slice(0, 0, 37), 2);
  for (int64_t i = 0; i < 37; ++i) {
    const auto& r = rows[static_cast<size_t>(i) + 1];
    ASSERT_EQ(r.size(), 9u);
    EXPECT_EQ(std::stoll(r[1]), data.test().labels[i].item<int64_t>());
    EXPECT_EQ(std::stoll(r[3]), p.top_indices[i][0].item<int64_t>());
    EXPECT_EQ(std::stoll(r[6]), p.top_indices[i][1].item<int64_t>());
    EXPECT_NEAR(std::stod(r[5]), p.top_probabilities[i][0].item<double>(), 1e-5);
    EXPECT_NEAR(std::stod(r[8]), p.top_probabilities[i][1].item<double>(), 1e-5);
  }
  EXPECT_EQ(rows[1][2].empty(), false);
}

// --write-int8 quantizes the weights to static int8 and predicts with them; --int8 reads the file
// back and predicts the same; both agree with the fp32 model on nearly every image.
TEST(PredictExample, Int8FileIsWrittenAndPredictsAsTheFloatModel) {
  if (!fs::exists(std::string(frugal::datasets::FashionMnist::kDefaultDir))) {
    GTEST_SKIP() << "Fashion-MNIST is not installed (dataset-fashion-mnist)";
  }
  const std::string dir = frugal::testing::temp_dir("predict_example_int8");
  torch::manual_seed(4);
  torch::nn::Sequential net = frugal::models::SmallCnnBn();
  {
    // A few steps of training, so that the predictions mean something.
    const auto data = frugal::datasets::FashionMnist::load();
    torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-3));
    for (int64_t i = 0; i < 1280; i += 64) {
      opt.zero_grad();
      torch::nn::functional::cross_entropy(net->forward(data.train().images.slice(0, i, i + 64)),
                                           data.train().labels.slice(0, i, i + 64))
          .backward();
      opt.step();
    }
  }
  torch::save(net, dir + "/cnn.pt");
  std::string log;
  const std::string common = " --limit 500 --top-k 1";
  ASSERT_EQ(
      run("--model cnn-bn --weights " + dir + "/cnn.pt --out " + dir + "/fp32.csv" + common, &log),
      0)
      << log;
  ASSERT_EQ(run("--model cnn-bn --weights " + dir + "/cnn.pt --write-int8 " + dir +
                    "/cnn.int8 --out " + dir + "/int8.csv" + common,
                &log),
            0)
      << log;
  EXPECT_NE(log.find("int8 model"), std::string::npos) << log;
  ASSERT_TRUE(fs::exists(dir + "/cnn.int8"));
  EXPECT_LT(fs::file_size(dir + "/cnn.int8"), fs::file_size(dir + "/cnn.pt") / 3);
  ASSERT_EQ(run("--int8 " + dir + "/cnn.int8 --out " + dir + "/again.csv" + common, &log), 0)
      << log;
  const auto fp32 = read_csv(dir + "/fp32.csv");
  const auto int8 = read_csv(dir + "/int8.csv");
  const auto again = read_csv(dir + "/again.csv");
  ASSERT_EQ(fp32.size(), 501u);
  ASSERT_EQ(int8.size(), 501u);
  EXPECT_EQ(int8, again);  // the file computes what the model it was written from computed
  int same = 0;
  for (size_t i = 1; i < fp32.size(); ++i) same += fp32[i][3] == int8[i][3];
  std::cout << "int8 top-1 equals fp32 top-1 on " << same << " of 500 images\n";
  EXPECT_GE(same, 480);
  EXPECT_EQ(run("--int8 " + dir + "/cnn.int8 --precision bf16-mixed --out " + dir + "/x.csv", &log),
            1);
  EXPECT_NE(log.find("--precision 32"), std::string::npos) << log;
}

TEST(PredictExample, ImageFilesGiveTheIdxImagesPredictions) {
  // Fashion-MNIST's test images written as PNG (lossless) by scripts/make-image-set: predicted
  // from the files, each equals the prediction for the same IDX image; a folder of class
  // sub-folders is labelled, a flat folder is not.
  if (!fs::exists(std::string(frugal::datasets::FashionMnist::kDefaultDir)) ||
      std::system("/usr/bin/python3 -c 'import PIL, numpy' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "needs Fashion-MNIST (dataset-fashion-mnist) and PIL (python3-pil)";
  }
  const std::string dir = frugal::testing::temp_dir("predict_example_images");
  ASSERT_EQ(std::system(("/usr/bin/python3 " + std::string(FRUGAL_MAKE_IMAGE_SET) +
                         " fashion-mnist " + dir + "/fm --format png --limit 30 >/dev/null")
                            .c_str()),
            0);
  torch::manual_seed(4);
  torch::nn::Sequential net = frugal::models::SmallCnnBn();
  torch::save(net, dir + "/cnn.pt");
  std::string log;
  ASSERT_EQ(run("--model cnn-bn --weights " + dir + "/cnn.pt --images " + dir + "/fm/test --out " +
                    dir + "/p.csv --top-k 2 --batch-size 8",
                &log),
            0)
      << log;
  const auto rows = read_csv(dir + "/p.csv");
  ASSERT_EQ(rows.size(), 31u);
  EXPECT_EQ(rows[0][0], "path");
  EXPECT_EQ(rows[0][1], "label");
  const auto data = frugal::datasets::FashionMnist::load();
  frugal::Predictor predictor(net);
  frugal::Predictions p = predictor.predict(data.test().images.slice(0, 0, 30), 2);
  std::set<int64_t> seen;
  for (size_t r = 1; r < rows.size(); ++r) {
    // "<label>/<index>.png"
    const std::string& path = rows[r][0];
    const int64_t i = std::stoll(fs::path(path).stem().string());
    seen.insert(i);
    EXPECT_EQ(std::stoll(rows[r][1]), data.test().labels[i].item<int64_t>()) << path;
    EXPECT_EQ(std::stoll(rows[r][3]), p.top_indices[i][0].item<int64_t>()) << path;
    EXPECT_NEAR(std::stod(rows[r][5]), p.top_probabilities[i][0].item<double>(), 1e-5) << path;
    EXPECT_NEAR(std::stod(rows[r][8]), p.top_probabilities[i][1].item<double>(), 1e-5) << path;
  }
  EXPECT_EQ(seen.size(), 30u);
  // A flat folder: no labels.
  fs::create_directories(dir + "/flat");
  fs::copy_file(dir + "/fm/test/9/00000.png", dir + "/flat/a.png");
  fs::copy_file(dir + "/fm/test/2/00001.png", dir + "/flat/b.PNG");
  ASSERT_EQ(run("--model cnn-bn --weights " + dir + "/cnn.pt --images " + dir + "/flat --out " +
                    dir + "/flat.csv --top-k 1",
                &log),
            0)
      << log;
  const auto flat = read_csv(dir + "/flat.csv");
  ASSERT_EQ(flat.size(), 3u);
  EXPECT_EQ(flat[0], (std::vector<std::string>{"path", "top1", "top1_name", "top1_probability"}));
  EXPECT_EQ(flat[1][0], "a.png");
  EXPECT_EQ(std::stoll(flat[2][1]), p.top_indices[1][0].item<int64_t>());
  EXPECT_NEAR(std::stod(flat[2][3]), p.top_probabilities[1][0].item<double>(), 1e-5);
  EXPECT_EQ(run("--model cnn-bn --weights " + dir + "/cnn.pt --images " + dir + "/nothing --out " +
                    dir + "/none.csv",
                &log),
            1);
  EXPECT_NE(log.find("nothing: no such folder"), std::string::npos) << log;
}

TEST(PredictExample, BadArgumentsFailWithoutAFile) {
  const std::string dir = frugal::testing::temp_dir("predict_example_bad");
  std::string log;
  EXPECT_EQ(run("--model cnn --out " + dir + "/p.csv", &log), 1);
  EXPECT_NE(log.find("exactly one of --weights, --torchscript and --int8"), std::string::npos)
      << log;
  EXPECT_EQ(run("--model cnn --weights " + dir + "/missing.pt --out " + dir + "/p.csv", &log), 1);
  EXPECT_NE(log.find("missing.pt"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(dir + "/p.csv"));
}
