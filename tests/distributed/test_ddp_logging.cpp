// Logs of a data-parallel run: only rank 0 writes them. Two ranks (frugal-launch, 127.0.0.1) leave
// one version folder with one TensorBoard event file, one metrics.csv and one report.html, whether
// the Trainer made its default loggers or the program made them on every rank
// (frugal::make_file_loggers), and the event file holds a record for every logged CSV row.
#include <frugal/loggers/report.h>
#include <frugal/loggers/tensorboard.h>

#include <filesystem>

#include "ddp_test_support.h"

namespace fs = std::filesystem;
namespace ft = frugal::testing;

namespace {

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

void expect_one_set_of_logs(const std::string& name, const std::string& logger) {
  const std::string dir = ft::temp_dir(name);
  const auto run =
      ft::run_worker(2,
                     {"--model", "mlp", "--batch-size", "8", "--max-steps", "6", "--log-every", "2",
                      "--val-every", "3", "--root", dir, "--logger", logger},
                     dir + "/run.log");
  ASSERT_EQ(run.exit_code, 0) << run.log;
  const fs::path root = fs::path(dir) / "frugal_logs";
  ASSERT_EQ(entries(root), (std::vector<std::string>{"version_0"})) << "one folder for 2 ranks";
  const fs::path version = root / "version_0";
  std::vector<std::string> events;
  for (const auto& f : entries(version)) {
    if (f.rfind("events.out.tfevents.", 0) == 0) events.push_back(f);
  }
  ASSERT_EQ(events.size(), 1u) << "one event file for 2 ranks";
  EXPECT_TRUE(fs::exists(version / "metrics.csv"));
  EXPECT_TRUE(fs::exists(version / "report.html"));

  // Every CSV row with a train/loss has its event, each record whole and CRC-checked.
  const auto rows = frugal::detail::parse_csv(ft::read_text((version / "metrics.csv").string()));
  ASSERT_GE(rows.size(), 2u);
  const auto column = std::find(rows[0].begin(), rows[0].end(), "train/loss") - rows[0].begin();
  ASSERT_LT(static_cast<size_t>(column), rows[0].size());
  std::vector<std::string> steps;
  for (size_t r = 1; r < rows.size(); ++r) {
    if (!rows[r][column].empty()) steps.push_back(rows[r][1]);
  }
  EXPECT_EQ(steps, (std::vector<std::string>{"2", "4", "6"}));
  const auto file = frugal::detail::read_tfrecords((version / events[0]).string());
  EXPECT_EQ(file.trailing_bytes, 0u);
  size_t with_loss = 0;
  for (const auto& rec : file.records) {
    if (rec.find("train/loss") != std::string::npos) ++with_loss;
  }
  // The scalar events, plus the hparams experiment record that lists the metric names.
  EXPECT_EQ(with_loss, steps.size() + 1);
}

}  // namespace

TEST(DdpLogging, TheTrainersDefaultLoggersWriteOnRankZeroOnly) {
  expect_one_set_of_logs("ddp_logs_default", "default");
}

TEST(DdpLogging, LoggersMadeOnEveryRankWriteOnRankZeroOnly) {
  expect_one_set_of_logs("ddp_logs_every_rank", "both");
}
