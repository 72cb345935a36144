// examples/predict: the CSV it writes for Fashion-MNIST test images (weights from a torch::save
// archive) holds the classes and probabilities frugal::Predictor computes in-process; bad
// arguments give an error and no file.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
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

TEST(PredictExample, BadArgumentsFailWithoutAFile) {
  const std::string dir = frugal::testing::temp_dir("predict_example_bad");
  std::string log;
  EXPECT_EQ(run("--model cnn --out " + dir + "/p.csv", &log), 1);
  EXPECT_NE(log.find("exactly one of --weights and --torchscript"), std::string::npos) << log;
  EXPECT_EQ(run("--model cnn --weights " + dir + "/missing.pt --out " + dir + "/p.csv", &log), 1);
  EXPECT_NE(log.find("missing.pt"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(dir + "/p.csv"));
}
