// Trials: the numbers in the report come from real runs (a larger micro-batch measures more
// memory; the accuracy equals a hand-built Trainer run of the same configuration), failures and
// limit breakers are reported with their reason, the ranking follows the weights and the
// documented formula, the CSV and JSON files hold the report's numbers, and bad options are
// refused by name.
#include <fmt/format.h>
#include <frugal/budget/trials.h>
#include <frugal/deploy/quantize.h>
#include <frugal/deploy/quantized_model.h>
#include <frugal/loggers/report.h>
#include <frugal/models/zoo.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.h"
#include "under_asan.h"

#ifdef FRUGAL_TEST_HAS_JSON
#include <nlohmann/json.hpp>
#endif

namespace {

using frugal::Precision;
using frugal::TrialConfig;
using frugal::TrialResult;
using frugal::Trials;
using frugal::TrialsOptions;
using frugal::testing::error_message;

constexpr double kMiB = 1024.0 * 1024.0;

// Note [Reproducible CPU measurements] (docs/budget.md): a fixed mmap threshold gives every large
// tensor its own mapping, so peak RSS growth follows what a run really allocates.
const bool kFixedMmapThreshold = mallopt(M_MMAP_THRESHOLD, 64 * 1024) == 1;

// Training and validation samples of one toy problem (make_toy_data draws new class centres for
// every seed, so both must come from one call).
struct Split {
  frugal::testing::ToyData train;
  frugal::testing::ToyData val;
};
Split toy_split(int64_t train, int64_t val, int64_t features, int64_t classes, uint64_t seed) {
  auto all = frugal::testing::make_toy_data(train + val, features, classes, seed);
  return {{all.x.narrow(0, 0, train), all.y.narrow(0, 0, train)},
          {all.x.narrow(0, train, val), all.y.narrow(0, train, val)}};
}

TrialsOptions quiet() {
  return TrialsOptions().accelerator("cpu").epochs(1).data_fraction(1.0).seed(7);
}

const TrialResult& find(const frugal::TrialsReport& report, const std::string& model,
                        int64_t micro_batch = -1) {
  for (const auto& r : report.results) {
    if (r.config.model == model && (micro_batch < 0 || r.config.micro_batch == micro_batch)) {
      return r;
    }
  }
  ADD_FAILURE() << "no row for " << model << " " << micro_batch << " in\n" << report.table();
  static const TrialResult none;
  return none;
}

// (1) Two configurations that differ only in the micro-batch: the inputs of a 512-sample batch
// (2048 floats each: 4 MiB per copy, activations on top) must show in the measured peak, which a
// 4-sample batch does not have; both runs have positive times and speeds.
TEST(Trials, LargerMicroBatchMeasuresMoreMemory) {
  FRUGAL_SKIP_UNDER_ASAN();
  ASSERT_TRUE(kFixedMmapThreshold);
  auto [data, val] = toy_split(1024, 64, 2048, 4, 1);
  Trials trials(quiet().weight_accuracy(0.0));
  trials.add_classifier("mlp", [] { return frugal::models::Mlp(2048, 256, 4, 1); });
  trials.add_candidate({"mlp", Precision::k32, 4, 1, 1e-3});
  trials.add_candidate({"mlp", Precision::k32, 512, 1, 1e-3});
  const auto report = trials.run(data.x, data.y, val.x, val.y);
  const TrialResult& small = find(report, "mlp", 4);
  const TrialResult& large = find(report, "mlp", 512);
  for (const TrialResult* r : {&small, &large}) {
    ASSERT_EQ(r->status, TrialResult::Status::kRanked) << r->reason;
    EXPECT_EQ(r->epochs, 1);
    EXPECT_GT(r->seconds, 0.0);
    EXPECT_GT(r->epoch_seconds, 0.0);
    EXPECT_LE(r->epoch_seconds, r->seconds);
    EXPECT_GT(r->samples_per_second, 0.0);
    EXPECT_NEAR(r->full_epoch_seconds, 1024.0 / r->samples_per_second, 1e-9);
    EXPECT_GE(r->peak_bytes, 0);
    EXPECT_EQ(r->peak_allocated_bytes, -1);  // CPU
  }
  // Per batch the large run holds at least the batch itself (4 MiB) and its hidden activations;
  // the small one a few KiB. Parameters and optimizer state are the same in both.
  EXPECT_GT(static_cast<double>(large.peak_bytes), static_cast<double>(small.peak_bytes) + 4 * kMiB)
      << report.table();
  // 256 steps of 4 samples cost more per sample than 2 steps of 512.
  EXPECT_GT(large.samples_per_second, small.samples_per_second) << report.table();
  EXPECT_EQ(report.train_samples, 1024);
  EXPECT_EQ(report.full_train_samples, 1024);
}

// (2) The accuracy and loss in the report are those of a real run: a Trainer built by hand with
// the same options, seed, subset and loader gives the same numbers, bit for bit.
TEST(Trials, AccuracyEqualsAHandBuiltRun) {
  auto [data, val] = toy_split(400, 120, 8, 3, 3);
  auto make = [] { return frugal::models::Mlp(8, 16, 3, 1); };
  const TrialConfig config{"mlp", Precision::k32, 16, 2, 2e-2};
  Trials trials(quiet().epochs(2).data_fraction(0.25));
  trials.add_classifier("mlp", make).add_candidate(config);
  const auto report = trials.run(data.x, data.y, val.x, val.y);
  const TrialResult& r = find(report, "mlp");
  ASSERT_EQ(r.status, TrialResult::Status::kRanked) << r.reason;
  EXPECT_EQ(report.train_samples, 100);

  const at::Tensor index = trials.subset_indices(400);
  ASSERT_EQ(index.numel(), 100);
  EXPECT_TRUE(torch::equal(index, std::get<0>(index.sort())));
  EXPECT_EQ(std::get<0>(at::_unique(index)).numel(), 100);  // distinct samples
  torch::manual_seed(7);
  auto net = make();
  frugal::Classifier task(net, frugal::AdamW(2e-2));
  frugal::Trainer trainer(
      frugal::testing::quiet_options().max_epochs(2).seed(7).accumulate_grad_batches(2).precision(
          Precision::k32));
  auto train = std::make_shared<frugal::TensorLoader>(
      data.x.index_select(0, index), data.y.index_select(0, index),
      frugal::TensorLoaderOptions(16).shuffle(true).seed(7));
  trainer.fit(
      task, train,
      std::make_shared<frugal::TensorLoader>(val.x, val.y, frugal::TensorLoaderOptions(16)));
  const double acc = trainer.metrics().get("val/acc").value();
  const double loss = trainer.metrics().get("val/loss").value();
  EXPECT_EQ(r.val_acc, acc);
  EXPECT_EQ(r.val_loss, loss);
  EXPECT_EQ(r.epochs, 2);
  // Not a trivial number: the model learned (chance is 1/3).
  EXPECT_GT(acc, 0.6);
  // The Trainer options a trial uses are the ones reported for repeating it.
  const frugal::TrainerOptions o = trials.trainer_options(config);
  EXPECT_EQ(o.max_epochs(), 2);
  EXPECT_EQ(o.seed(), 7);
  EXPECT_EQ(o.accumulate_grad_batches(), 2);
  EXPECT_FALSE(o.logger());
  EXPECT_FALSE(o.enable_progress_bar());
}

// (3) A factory that throws, a micro-batch larger than the subset and a candidate over the memory
// limit each get a row with the reason; the candidate within the limit is still ranked.
TEST(Trials, FailuresAndLimitBreakersAreReportedWithTheirReason) {
  FRUGAL_SKIP_UNDER_ASAN();
  ASSERT_TRUE(kFixedMmapThreshold);
  auto data = frugal::testing::make_toy_data(64, 8, 3, 5);
  std::ostringstream progress;
  Trials trials(quiet().max_memory_bytes(24 * kMiB).out(&progress));
  trials.add_classifier("tiny", [] { return frugal::models::Mlp(8, 8, 3, 1); });
  // 2048 x 2048 weights: 16 MiB of parameters, as much again of gradients, twice that of AdamW's
  // state: 64 MiB, far over 24 MiB whatever else the run allocates.
  trials.add_classifier("wide", [] {
    return torch::nn::Sequential(torch::nn::Linear(8, 2048), torch::nn::ReLU(),
                                 torch::nn::Linear(2048, 2048), torch::nn::ReLU(),
                                 torch::nn::Linear(2048, 3));
  });
  trials.add_model("broken", [](const TrialConfig&) -> std::unique_ptr<frugal::Task> {
    throw std::runtime_error("boom: no such layer");
  });
  trials.add_candidate({"broken", Precision::k32, 16, 1, 1e-3})
      .add_candidate({"tiny", Precision::k32, 16, 1, 1e-3})
      .add_candidate({"wide", Precision::k32, 16, 1, 1e-3})
      .add_candidate({"tiny", Precision::k32, 128, 1, 1e-3});
  const auto report = trials.run(data.x, data.y, data.x, data.y);
  ASSERT_EQ(report.results.size(), 4u) << report.table();

  const TrialResult& ok = report.results[0];
  EXPECT_EQ(ok.config.model, "tiny");
  EXPECT_EQ(ok.status, TrialResult::Status::kRanked);
  EXPECT_EQ(ok.rank, 1);
  EXPECT_LT(static_cast<double>(ok.peak_bytes), 24 * kMiB);

  const TrialResult& wide = report.results[1];
  EXPECT_EQ(wide.config.model, "wide");
  EXPECT_EQ(wide.status, TrialResult::Status::kOverLimit);
  EXPECT_EQ(wide.rank, 0);
  EXPECT_TRUE(std::isnan(wide.score));
  EXPECT_GT(static_cast<double>(wide.peak_bytes), 60 * kMiB);
  EXPECT_EQ(wide.reason, fmt::format("peak memory {:.1f} MiB > limit 24.0 MiB",
                                     static_cast<double>(wide.peak_bytes) / kMiB));
  EXPECT_TRUE(std::isfinite(wide.val_acc));  // it ran: its numbers are there

  const TrialResult& broken = report.results[2];
  EXPECT_EQ(broken.config.model, "broken");
  EXPECT_EQ(broken.status, TrialResult::Status::kFailed);
  EXPECT_EQ(broken.reason, "task factory: boom: no such layer");

  const TrialResult& too_big = report.results[3];
  EXPECT_EQ(too_big.config.micro_batch, 128);
  EXPECT_EQ(too_big.status, TrialResult::Status::kFailed);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "micro_batch 128 is more than the 64 samples",
                      too_big.reason);

  ASSERT_NE(report.best(), nullptr);
  EXPECT_EQ(report.best()->config.model, "tiny");
  const std::string table = report.table();
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "failed: task factory: boom: no such layer", table);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "over limit: " + wide.reason, table);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "limits: memory 24.0 MiB, epoch none", table);
  // Progress lines, then the same table, go to the stream.
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "trial 1/4: broken 32 micro-batch 16 x 1",
                      progress.str());
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, table, progress.str());
}

// The epoch-time limit applies to the estimate for the whole training set.
TEST(Trials, EpochTimeLimitUsesTheFullSetEstimate) {
  auto data = frugal::testing::make_toy_data(200, 8, 3, 5);
  Trials trials(quiet().data_fraction(0.5).max_epoch_seconds(1e-9));
  trials.add_classifier("tiny", [] { return frugal::models::Mlp(8, 8, 3, 1); })
      .add_candidate({"tiny", Precision::k32, 10, 1, 1e-3});
  const auto report = trials.run(data.x, data.y, data.x, data.y);
  const TrialResult& r = report.results.at(0);
  EXPECT_EQ(r.status, TrialResult::Status::kOverLimit);
  EXPECT_NEAR(r.full_epoch_seconds, 200.0 / r.samples_per_second, 1e-9);
  EXPECT_EQ(r.reason, fmt::format("epoch time {:.1f} s (estimated for 200 samples) > limit 1e-09 s",
                                  r.full_epoch_seconds));
  EXPECT_EQ(report.best(), nullptr);
}

// (4) The weights decide the order, and the score is the documented formula of the reported
// numbers.
TEST(Trials, RankingFollowsTheWeights) {
  auto [data, val] = toy_split(256, 96, 8, 3, 6);
  auto build = [&](TrialsOptions options) {
    Trials trials(options);
    trials.add_classifier("mlp", [] { return frugal::models::Mlp(8, 32, 3, 1); });
    // Added first: the one that barely learns (lr 1e-6), then the one that does.
    trials.add_candidate({"mlp", Precision::k32, 32, 1, 1e-6});
    trials.add_candidate({"mlp", Precision::k32, 32, 1, 3e-2});
    return trials.run(data.x, data.y, val.x, val.y);
  };
  const auto by_accuracy =
      build(quiet().epochs(2).weight_memory(0).weight_speed(0).weight_accuracy(1));
  ASSERT_EQ(by_accuracy.results.size(), 2u);
  const TrialResult& first = by_accuracy.results[0];
  const TrialResult& second = by_accuracy.results[1];
  EXPECT_EQ(first.config.lr, 3e-2) << by_accuracy.table();
  EXPECT_GT(first.val_acc, second.val_acc + 0.2) << by_accuracy.table();
  EXPECT_EQ(first.rank, 1);
  EXPECT_EQ(second.rank, 2);
  // Accuracy only: score = the accuracy term = smallest error / this error.
  const double e1 = std::clamp(1.0 - first.val_acc, 1e-3, 1.0);
  const double e2 = std::clamp(1.0 - second.val_acc, 1e-3, 1.0);
  EXPECT_DOUBLE_EQ(first.score, 1.0);
  EXPECT_DOUBLE_EQ(second.score, e1 / e2);

  // All three weights: the weighted mean of the three terms, each relative to the best.
  const auto mixed = build(quiet().epochs(2).weight_memory(1).weight_speed(2).weight_accuracy(3));
  ASSERT_EQ(mixed.results.size(), 2u);
  double best_m = INFINITY, best_t = INFINITY, best_e = INFINITY;
  for (const auto& r : mixed.results) {
    best_m = std::min(best_m, std::max(static_cast<double>(r.peak_bytes), kMiB));
    best_t = std::min(best_t, 1.0 / r.samples_per_second);
    best_e = std::min(best_e, std::clamp(1.0 - r.val_acc, 1e-3, 1.0));
  }
  for (const auto& r : mixed.results) {
    const double m = best_m / std::max(static_cast<double>(r.peak_bytes), kMiB);
    const double s = best_t * r.samples_per_second;
    const double a = best_e / std::clamp(1.0 - r.val_acc, 1e-3, 1.0);
    EXPECT_DOUBLE_EQ(r.memory_term, m);
    EXPECT_DOUBLE_EQ(r.speed_term, s);
    EXPECT_DOUBLE_EQ(r.accuracy_term, a);
    EXPECT_DOUBLE_EQ(r.score, (1 * m + 2 * s + 3 * a) / 6.0);
  }
  EXPECT_GE(mixed.results[0].score, mixed.results[1].score);
}

// A model that is not a Sequential (the zoo) gets its int8 size from its graph: every Linear
// int8 (quantize_dynamic_graph), the rest as it was, BatchNorm folded.
TEST(Trials, ZooModelsGetAnInt8SizeFromTheirGraph) {
  torch::manual_seed(0);
  at::Tensor x = torch::rand({64, 3, 32, 32}), y = torch::randint(0, 4, {64});
  Trials trials(quiet());
  trials.add_classifier("mnv3s", [] { return frugal::models::mobilenet_v3_small(4); });
  trials.add_grid(frugal::TrialGrid().micro_batches({32}));
  const auto result = trials.run(x, y, x.slice(0, 0, 32), y.slice(0, 0, 32));
  ASSERT_EQ(result.results.size(), 1u);
  const auto& r = result.results[0];
  auto fresh = frugal::models::mobilenet_v3_small(4);
  const int64_t expected = frugal::quantize_dynamic_graph(*fresh, x.slice(0, 0, 1))->weight_bytes();
  EXPECT_EQ(r.model_bytes_int8, expected) << result.table();
  EXPECT_LT(r.model_bytes_int8, r.model_bytes) << result.table();
}

// Deployment columns: each model's fp32 and int8 size (what quantize_dynamic stores), its
// eval-mode latency at batch 1 and 64, and scores that follow weight_size and weight_latency.
TEST(Trials, DeploymentColumnsAreMeasuredAndWeighable) {
  auto [data, val] = toy_split(128, 80, 8, 3, 4);
  auto state_bytes = [](torch::nn::Module& m) {
    int64_t n = 0;
    for (const auto& t : m.parameters()) n += static_cast<int64_t>(t.nbytes());
    for (const auto& t : m.buffers()) n += static_cast<int64_t>(t.nbytes());
    return n;
  };
  auto build = [&](TrialsOptions options) {
    Trials trials(options);
    trials.add_classifier("wide", [] { return frugal::models::Mlp(8, 256, 3, 2); });
    trials.add_classifier("narrow", [] { return frugal::models::Mlp(8, 16, 3, 1); });
    trials.add_grid(frugal::TrialGrid().micro_batches({32}));
    return trials.run(data.x, data.y, val.x, val.y);
  };
  const auto by_size =
      build(quiet().weight_memory(0).weight_speed(0).weight_accuracy(0).weight_size(1));
  ASSERT_EQ(by_size.results.size(), 2u);
  EXPECT_EQ(by_size.results[0].config.model, "narrow") << by_size.table();
  for (const auto& r : by_size.results) {
    auto model = r.config.model == "wide" ? frugal::models::Mlp(8, 256, 3, 2)
                                          : frugal::models::Mlp(8, 16, 3, 1);
    EXPECT_EQ(r.model_bytes, state_bytes(*model)) << r.config.model;
    EXPECT_EQ(r.model_bytes_int8, state_bytes(*frugal::quantize_dynamic(model))) << r.config.model;
    EXPECT_LT(r.model_bytes_int8, r.model_bytes) << r.config.model;
    EXPECT_GT(r.latency_b1_ms, 0) << r.config.model;
    EXPECT_GT(r.latency_b64_ms, 0) << r.config.model;
  }
  const double small = std::max(static_cast<double>(by_size.results[0].model_bytes), 1024.0);
  const double large = std::max(static_cast<double>(by_size.results[1].model_bytes), 1024.0);
  EXPECT_DOUBLE_EQ(by_size.results[0].score, 1.0);
  EXPECT_DOUBLE_EQ(by_size.results[1].score, small / large);
  EXPECT_DOUBLE_EQ(by_size.results[1].size_term, small / large);

  const auto by_latency =
      build(quiet().weight_memory(0).weight_speed(0).weight_accuracy(0).weight_latency(1));
  double best = INFINITY;
  for (const auto& r : by_latency.results) best = std::min(best, std::max(r.latency_b1_ms, 1e-3));
  for (const auto& r : by_latency.results) {
    EXPECT_DOUBLE_EQ(r.score, best / std::max(r.latency_b1_ms, 1e-3)) << r.config.model;
  }
  EXPECT_NE(by_latency.table().find("lat1 ms"), std::string::npos);
  // Off: nothing measured, and weighting it is refused.
  const auto off = build(quiet().measure_deployment(false));
  EXPECT_TRUE(std::isnan(off.results[0].latency_b1_ms));
  EXPECT_EQ(off.results[0].model_bytes, -1);
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring, "weight_latency and weight_size need measure_deployment",
      error_message([] { quiet().measure_deployment(false).weight_size(1).validate(); }));
}

// A small CSV reader: quoted fields may hold commas, doubled quotes and newlines.
std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      row.push_back(field);
      field.clear();
    } else if (c == '\n') {
      row.push_back(field);
      field.clear();
      rows.push_back(row);
      row.clear();
    } else {
      field += c;
    }
  }
  return rows;
}

double number(const std::string& text) { return text.empty() ? NAN : std::stod(text); }

void expect_same(double expected, double got, const std::string& what) {
  if (std::isnan(expected)) {
    EXPECT_TRUE(std::isnan(got)) << what;
  } else {
    EXPECT_EQ(expected, got) << what;
  }
}

// (5) trials.csv and trials.json parse and hold exactly the report's numbers.
TEST(Trials, CsvAndJsonHoldTheReportsNumbers) {
  const std::string dir = frugal::testing::temp_dir("trials_files");
  auto data = frugal::testing::make_toy_data(96, 8, 3, 9);
  Trials trials(quiet().output_dir(dir + "/plan"));
  trials.add_classifier("mlp", [] { return frugal::models::Mlp(8, 16, 3, 1); });
  trials.add_model("broken, \"quoted\"", [](const TrialConfig&) -> std::unique_ptr<frugal::Task> {
    throw std::runtime_error("line one, with a comma\nline \"two\"");
  });
  trials.add_grid(frugal::TrialGrid().models({"mlp"}).micro_batches({8, 32}).lrs({1e-3}));
  trials.add_candidate({"broken, \"quoted\"", Precision::k32, 8, 1, 1e-3});
  const auto report = trials.run(data.x, data.y, data.x, data.y);
  ASSERT_EQ(report.results.size(), 3u);

  const auto rows = parse_csv(frugal::testing::read_text(dir + "/plan/trials.csv"));
  ASSERT_EQ(rows.size(), 4u);
  std::map<std::string, size_t> col;
  for (size_t i = 0; i < rows[0].size(); ++i) col[rows[0][i]] = i;
  for (size_t i = 0; i < report.results.size(); ++i) {
    const TrialResult& r = report.results[i];
    const auto& row = rows[i + 1];
    ASSERT_EQ(row.size(), rows[0].size());
    const std::string what = "csv row " + std::to_string(i);
    EXPECT_EQ(row[col.at("model")], r.config.model) << what;
    EXPECT_EQ(row[col.at("status")], frugal::to_string(r.status)) << what;
    EXPECT_EQ(row[col.at("reason")], r.reason) << what;
    EXPECT_EQ(std::stoll(row[col.at("micro_batch")]), r.config.micro_batch) << what;
    expect_same(r.score, number(row[col.at("score")]), what + " score");
    expect_same(r.seconds, number(row[col.at("seconds")]), what + " seconds");
    expect_same(r.samples_per_second, number(row[col.at("samples_per_second")]), what);
    expect_same(r.val_acc, number(row[col.at("val_acc")]), what + " val_acc");
    expect_same(r.val_loss, number(row[col.at("val_loss")]), what + " val_loss");
    expect_same(r.peak_bytes >= 0 ? static_cast<double>(r.peak_bytes) : NAN,
                number(row[col.at("peak_bytes")]), what + " peak_bytes");
  }

  // The page beside them is the report's (its content: tests/loggers/test_report.cpp).
  EXPECT_EQ(frugal::testing::read_text(dir + "/plan/report.html"),
            frugal::render_trials_report(report));

#ifdef FRUGAL_TEST_HAS_JSON
  const auto json = nlohmann::json::parse(frugal::testing::read_text(dir + "/plan/trials.json"));
  EXPECT_EQ(json.at("device"), "cpu");
  EXPECT_EQ(json.at("train_samples"), 96);
  EXPECT_EQ(json.at("options").at("epochs"), 1);
  ASSERT_EQ(json.at("results").size(), 3u);
  auto value = [](const nlohmann::json& j) { return j.is_null() ? NAN : j.get<double>(); };
  for (size_t i = 0; i < report.results.size(); ++i) {
    const TrialResult& r = report.results[i];
    const auto& j = json.at("results")[i];
    const std::string what = "json row " + std::to_string(i);
    EXPECT_EQ(j.at("model"), r.config.model) << what;
    EXPECT_EQ(j.at("reason"), r.reason) << what;
    EXPECT_EQ(j.at("precision"), "32") << what;
    expect_same(r.score, value(j.at("score")), what + " score");
    expect_same(r.samples_per_second, value(j.at("samples_per_second")), what);
    expect_same(r.epoch_seconds, value(j.at("epoch_seconds")), what);
    expect_same(r.val_acc, value(j.at("val_acc")), what + " val_acc");
    expect_same(r.peak_bytes >= 0 ? static_cast<double>(r.peak_bytes) : NAN,
                value(j.at("peak_bytes")), what + " peak_bytes");
    if (r.rank > 0) {
      EXPECT_EQ(j.at("rank"), r.rank) << what;
    } else {
      EXPECT_TRUE(j.at("rank").is_null()) << what;
    }
  }
#endif
}

// (6) Bad options and input are refused with the option's name and what is allowed.
TEST(Trials, BadOptionsNameTheOption) {
  auto msg = [](TrialsOptions o) { return error_message([&] { Trials trials(o); }); };
  EXPECT_EQ(msg(TrialsOptions().data_fraction(0.0)),
            "TrialsOptions: data_fraction must be in (0, 1], got 0");
  EXPECT_EQ(msg(TrialsOptions().data_fraction(1.5)),
            "TrialsOptions: data_fraction must be in (0, 1], got 1.5");
  EXPECT_EQ(msg(TrialsOptions().epochs(0)), "TrialsOptions: epochs must be >= 1, got 0");
  EXPECT_EQ(msg(TrialsOptions().seed(-1)), "TrialsOptions: seed must be >= 0, got -1");
  EXPECT_EQ(msg(TrialsOptions().accelerator("tpu")),
            "TrialsOptions: accelerator must be \"auto\", \"cpu\" or \"cuda\", got \"tpu\"");
  EXPECT_EQ(msg(TrialsOptions().weight_speed(-1)),
            "TrialsOptions: weight_speed must be a finite number >= 0, got -1");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "are all 0",
                      msg(TrialsOptions().weight_memory(0).weight_speed(0).weight_accuracy(0)));
  EXPECT_EQ(msg(TrialsOptions().max_memory_bytes(-1)),
            "TrialsOptions: max_memory_bytes must be >= 0 (0: no limit), got -1");
  EXPECT_EQ(msg(TrialsOptions().max_epoch_seconds(-2)),
            "TrialsOptions: max_epoch_seconds must be >= 0 (0: no limit), got -2");
  EXPECT_EQ(msg(TrialsOptions().val_batch_size(-1)),
            "TrialsOptions: val_batch_size must be >= 1 (or 0: the micro-batch), got -1");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "accuracy_metric",
                      msg(TrialsOptions().accuracy_metric("")));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "must not use budget mode",
                      msg(TrialsOptions().trainer(
                          frugal::TrainerOptions().memory_budget(1e9).effective_batch_size(64))));
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "must not set oom_recovery",
                      msg(TrialsOptions().trainer(frugal::TrainerOptions().oom_recovery(true))));
  EXPECT_PRED_FORMAT2(
      ::testing::IsSubstring, "accumulate_grad_batches must be >= 1",
      msg(TrialsOptions().trainer(frugal::TrainerOptions().accumulate_grad_batches(0))));

  Trials trials(quiet());
  EXPECT_EQ(error_message([&] {
              trials.add_candidate({"cnn", Precision::k32, 8, 1, 1e-3});
            }),
            "Trials::add_candidate: unknown model \"cnn\" (added: none); add it with add_model or "
            "add_classifier first");
  trials.add_classifier("mlp", [] { return frugal::models::Mlp(8, 8, 3, 1); });
  EXPECT_EQ(
      error_message([&] { trials.add_classifier("mlp", [] { return frugal::models::Mlp(); }); }),
      "Trials::add_model: a model named \"mlp\" was already added");
  EXPECT_EQ(error_message([&] {
              trials.add_candidate({"mlp", Precision::k32, 0, 1, 1e-3});
            }),
            "Trials::add_candidate: micro_batch must be >= 1, got 0 (mlp)");
  EXPECT_EQ(error_message([&] {
              trials.add_candidate({"mlp", Precision::k32, 8, 0, 1e-3});
            }),
            "Trials::add_candidate: accumulate must be >= 1, got 0 (mlp)");
  EXPECT_EQ(error_message([&] {
              trials.add_candidate({"mlp", Precision::k32, 8, 1, 0.0});
            }),
            "Trials::add_candidate: lr must be a finite number > 0, got 0 (mlp)");
  EXPECT_EQ(error_message([&] { trials.add_grid(frugal::TrialGrid().micro_batches({})); }),
            "TrialGrid: micro_batches must not be empty");
  auto data = frugal::testing::make_toy_data(16, 8, 3, 0);
  EXPECT_EQ(error_message([&] { trials.run(data.x, data.y, data.x, data.y); }),
            "Trials::run: no candidates; add some with add_candidate or add_grid");
  trials.add_candidate({"mlp", Precision::k32, 8, 1, 1e-3});
  EXPECT_EQ(error_message([&] { trials.run(data.x, data.y.narrow(0, 0, 8), data.x, data.y); }),
            "Trials::run: train_targets must have 16 rows like train_data, got shape [8]");
  EXPECT_EQ(error_message([&] { trials.run(data.x, data.y, at::Tensor(), data.y); }),
            "Trials::run: val_data must hold at least one sample along dim 0, got no tensor");
}

}  // namespace
