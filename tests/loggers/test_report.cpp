// The run report: parsing a run's files, what the page holds, the Trainer writing it, and the
// page as headless Chromium renders it (skipped without chromium).
#include <frugal/frugal.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "test_support.h"

namespace fs = std::filesystem;
using frugal::testing::error_message;
using frugal::testing::read_text;
using frugal::testing::temp_dir;

namespace {

// Two epochs of 4 steps, logged every 2 steps, as a CSVLogger writes them.
const char* kMetrics =
    "epoch,step,train/loss,lr-SGD,mem/rss_mb,train/grad_norm,val/acc,val/loss,train/acc\n"
    "0,2,1.5,0.1,500,2.5,,,\n"
    "0,4,1.25,0.1,510,2.0,,,\n"
    "0,4,,,,,0.5,1.2,\n"
    "0,4,,,,,,,0.45\n"
    "1,6,1.0,0.05,515,1.5,,,\n"
    "1,8,0.75,0.05,520,1.0,,,\n"
    "1,8,,,,,0.7,0.9,\n"
    "1,8,,,,,,,0.65\n";

frugal::RunReportInfo sample_info() {
  frugal::RunReportInfo info;
  info.title = "sample run";
  info.stop_reason = "EarlyStopping: val/loss did not improve";
  info.marks = {{4, "checkpoint"}, {8, "early stop"}};
  info.memory_thresholds_mb = {{600, "warn"}};
  info.environment = {{"LibTorch", "1.13.1"}, {"Intra-op threads", "2"}};
  return info;
}

const std::vector<std::pair<std::string, int>> kExpectedSeries = {
    // by step                 // by epoch (last value of each epoch)
    {"train/loss", 4 + 2}, {"val/loss", 2 + 2}, {"val/acc", 2 + 2},    {"train/acc", 2 + 2},
    {"lr-SGD", 4},         {"mem/rss_mb", 4},   {"train/grad_norm", 4}};

// Sum of data-points of every element with data-series="name".
int points_of(const std::string& html, const std::string& name) {
  const std::regex re("data-series=\"" + name + "\" data-points=\"(\\d+)\"");
  int total = 0;
  for (std::sregex_iterator it(html.begin(), html.end(), re), end; it != end; ++it) {
    total += std::stoi((*it)[1].str());
  }
  return total;
}

// How many times `pattern` matches in `text`.
long matches(const std::string& text, const std::string& pattern) {
  const std::regex re(pattern);
  return std::distance(std::sregex_iterator(text.begin(), text.end(), re), std::sregex_iterator());
}

void expect_complete_page(const std::string& html) {
  for (const auto& [name, points] : kExpectedSeries) {
    EXPECT_EQ(points_of(html, name), points) << name;
  }
  for (const char* title : {"Loss by step", "Loss by epoch", "Accuracy by step",
                            "Accuracy by epoch", "Learning rate", "Gradient norm", "Memory"}) {
    EXPECT_NE(html.find(std::string("data-title=\"") + title + "\""), std::string::npos) << title;
  }
  // Every chart has both axis labels.
  const auto charts = matches(html, "<svg ");
  const auto x_labels = matches(html, "x-label\"[^>]*>[^<]+<");
  const auto y_labels = matches(html, "y-label\"[^>]*>[^<]+<");
  EXPECT_EQ(charts, 7);
  EXPECT_EQ(x_labels, charts);
  EXPECT_EQ(y_labels, charts);
}

}  // namespace

TEST(RunReport, ParsesQuotedCsvAndFlatYaml) {
  const auto rows = frugal::detail::parse_csv("a,\"b,c\",\"say \"\"hi\"\"\"\n1,,\"x\ny\"\n");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"a", "b,c", "say \"hi\""}));
  EXPECT_EQ(rows[1], (std::vector<std::string>{"1", "", "x\ny"}));
  const auto yaml = frugal::detail::parse_flat_yaml("lr: 0.1\nname: \"a: b\"\n\"odd: key\": 3\n");
  ASSERT_EQ(yaml.size(), 3u);
  EXPECT_EQ(yaml[0], (std::pair<std::string, std::string>{"lr", "0.1"}));
  EXPECT_EQ(yaml[1], (std::pair<std::string, std::string>{"name", "a: b"}));
  EXPECT_EQ(yaml[2], (std::pair<std::string, std::string>{"odd: key", "3"}));
}

TEST(RunReport, PlotsEverySeriesWithMarksAndTables) {
  const std::string html = frugal::render_run_report(
      kMetrics, {{"max_epochs", "2"}, {"precision", "32"}}, sample_info());
  expect_complete_page(html);
  EXPECT_NE(html.find("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"),
            std::string::npos);
  EXPECT_NE(html.find("content=\"default-src 'none'; style-src 'unsafe-inline'\""),
            std::string::npos);
  EXPECT_NE(html.find("@media print"), std::string::npos);
  // Self-contained: no address of any kind, no script.
  for (const char* bad : {"http:", "https:", "//", "src=", "href=", "<script", "url("}) {
    EXPECT_EQ(html.find(bad), std::string::npos) << bad;
  }
  EXPECT_NE(html.find("Stopped: EarlyStopping: val/loss did not improve"), std::string::npos);
  // Loss, accuracy, learning rate, gradient norm and memory by step; not the two by epoch.
  EXPECT_EQ(matches(html, "data-label=\"checkpoint\""), 5)
      << "the checkpoint mark is on every step chart";
  EXPECT_NE(html.find("class=\"ref horizontal\" data-label=\"warn\""), std::string::npos);
  EXPECT_NE(html.find("<th scope=\"row\">val/acc</th><td>0.7 (epoch 1, step 8)</td>"),
            std::string::npos);
  EXPECT_NE(html.find("<th scope=\"row\">max_epochs</th><td>2</td>"), std::string::npos);
  EXPECT_NE(html.find("<th scope=\"row\">LibTorch</th><td>1.13.1</td>"), std::string::npos);
}

TEST(RunReport, BadInputIsNamed) {
  const std::string dir = temp_dir("report_bad");
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, (fs::path(dir) / "metrics.csv").string(),
                      error_message([&] { frugal::write_run_report(dir); }));
  std::ofstream(fs::path(dir) / "metrics.csv") << "step,loss\n1,2\n";
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "'epoch,step'",
                      error_message([&] { frugal::write_run_report(dir); }));
  std::ofstream(fs::path(dir) / "metrics.csv") << "epoch,step,loss\n0,1\n";
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "row 2 has 2 cells",
                      error_message([&] { frugal::write_run_report(dir); }));
  EXPECT_FALSE(fs::exists(fs::path(dir) / "report.html"));
}

TEST(RunReport, TrainerWritesItBesideTheLogs) {
  const std::string dir = temp_dir("report_fit");
  torch::nn::Sequential net(torch::nn::Linear(8, 3));
  frugal::Classifier task(net, frugal::SGD(0.1));
  auto train = frugal::testing::make_toy_data(64, 8, 3, 0);
  auto val = frugal::testing::make_toy_data(16, 8, 3, 1);
  frugal::Trainer trainer(
      frugal::testing::quiet_options(dir).logger(true).max_epochs(2).log_every_n_steps(4));
  trainer.fit(
      task,
      std::make_shared<frugal::TensorLoader>(train.x, train.y, frugal::TensorLoaderOptions(8)),
      std::make_shared<frugal::TensorLoader>(val.x, val.y, frugal::TensorLoaderOptions(8)));
  const std::string html = read_text((fs::path(trainer.log_dir()) / "report.html").string());
  ASSERT_FALSE(html.empty());
  // train/loss at steps 4, 8, 12, 16 (+ 2 epoch points); val/acc one per epoch (+ 2).
  EXPECT_EQ(points_of(html, "train/loss"), 6);
  EXPECT_EQ(points_of(html, "val/acc"), 4);
  EXPECT_NE(html.find("<th scope=\"row\">max_epochs</th><td>2</td>"), std::string::npos);
  EXPECT_NE(html.find("<th scope=\"row\">LibTorch</th>"), std::string::npos);
  EXPECT_NE(html.find("<th scope=\"row\">Intra-op threads</th>"), std::string::npos);
  EXPECT_NE(html.find("<th scope=\"row\">Device</th><td>cpu</td>"), std::string::npos);
}

TEST(RunReport, TrainerMarksCheckpointsThresholdsAndAFailure) {
  const std::string dir = temp_dir("report_fit_marks");
  torch::nn::Sequential net(torch::nn::Linear(8, 3));
  frugal::Classifier task(net, frugal::SGD(0.1));
  auto train = frugal::testing::make_toy_data(64, 8, 3, 0);
  auto val = frugal::testing::make_toy_data(16, 8, 3, 1);
  auto loader = [](const frugal::testing::ToyData& d) {
    return std::make_shared<frugal::TensorLoader>(d.x, d.y, frugal::TensorLoaderOptions(8));
  };
  // Every epoch's checkpoint kept (steps 8 and 16: the marks come from the kept files' names),
  // memory logged every 4 batches with a warning threshold of 64 GiB (drawn, never reached).
  auto checkpoints = std::make_shared<frugal::ModelCheckpoint>(frugal::ModelCheckpointOptions()
                                                                   .dirpath(dir + "/ckpt")
                                                                   .monitor("val/acc")
                                                                   .mode("max")
                                                                   .save_top_k(-1));
  auto memory = std::make_shared<frugal::MemoryMonitor>(frugal::MemoryMonitorOptions()
                                                            .warn_bytes(64.0 * (1 << 30))
                                                            .every_n_batches(4)
                                                            .print_summary(false));
  frugal::Trainer trainer(
      frugal::testing::quiet_options(dir).logger(true).max_epochs(2).log_every_n_steps(4),
      {checkpoints, memory});
  trainer.fit(task, loader(train), loader(val));
  const std::string html = read_text((fs::path(trainer.log_dir()) / "report.html").string());
  EXPECT_NE(html.find("<th scope=\"row\">Step 8</th><td>checkpoint</td>"), std::string::npos);
  EXPECT_NE(html.find("<th scope=\"row\">Step 16</th><td>checkpoint</td>"), std::string::npos);
  EXPECT_NE(html.find("data-title=\"Memory\""), std::string::npos);
  EXPECT_EQ(matches(html, "class=\"ref horizontal\" data-label=\"warn\""), 1);

  // A fit that fails still leaves its page, with the error as the stop reason.
  struct Boom : frugal::Callback {
    void on_train_batch_end(frugal::Trainer& t, frugal::Task&, const at::Tensor&,
                            const frugal::Batch&, int64_t) override {
      if (t.state().global_step == 6) throw std::runtime_error("boom at step 6");
    }
  };
  const std::string failing_dir = temp_dir("report_fit_failed");
  frugal::Trainer failing(
      frugal::testing::quiet_options(failing_dir).logger(true).max_epochs(2).log_every_n_steps(2),
      {std::make_shared<Boom>()});
  EXPECT_THROW(failing.fit(task, loader(train), loader(val)), std::runtime_error);
  const std::string failed = read_text((fs::path(failing.log_dir()) / "report.html").string());
  EXPECT_NE(failed.find("Stopped: failed: boom at step 6"), std::string::npos);
  EXPECT_EQ(points_of(failed, "train/loss"), 3 + 1) << "steps 2, 4, 6 and the epoch point";
}

TEST(RunReport, MalformedFilesAreNamedWithTheLine) {
  const std::string dir = temp_dir("report_malformed");
  std::ofstream(fs::path(dir) / "metrics.csv") << "epoch,step,loss\n0,1,0.5\n0,2,fast\n";
  const std::string bad_number = error_message([&] { frugal::write_run_report(dir); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "row 3, column 'loss': 'fast' is not a number",
                      bad_number);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, (fs::path(dir) / "metrics.csv").string(), bad_number);
  std::ofstream(fs::path(dir) / "metrics.csv") << "epoch,step,loss\n0,1,0.5\n";
  std::ofstream(fs::path(dir) / "hparams.yaml") << "lr: 0.1\n- not a map\n";
  const std::string bad_yaml = error_message([&] { frugal::write_run_report(dir); });
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, (fs::path(dir) / "hparams.yaml").string(), bad_yaml);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "line 2: expected 'key: value'", bad_yaml);
  EXPECT_FALSE(fs::exists(fs::path(dir) / "report.html"));
}

// ---- frugal-report ----

#ifdef FRUGAL_REPORT_TOOL
TEST(FrugalReportTool, WritesThePageOfARunsFolder) {
  const std::string dir = temp_dir("report_tool");
  std::ofstream(fs::path(dir) / "metrics.csv") << kMetrics;
  std::ofstream(fs::path(dir) / "hparams.yaml") << "max_epochs: 2\nprecision: \"32\"\n";
  const auto run = frugal::testing::run_program(
      FRUGAL_REPORT_TOOL, "--title 'tool run' " + frugal::testing::shell_quote(dir), dir, "tool");
  ASSERT_EQ(run.exit_code, 0) << run.describe();
  const std::string page = (fs::path(dir) / "report.html").string();
  EXPECT_EQ(run.out, "wrote " + page + "\n");
  const std::string html = read_text(page);
  EXPECT_NE(html.find("<title>tool run</title>"), std::string::npos);
  EXPECT_EQ(points_of(html, "train/loss"), 6);
  EXPECT_EQ(points_of(html, "val/acc"), 4);
  EXPECT_NE(html.find("<th scope=\"row\">precision</th><td>32</td>"), std::string::npos);
}

TEST(FrugalReportTool, AMissingOrBadFileIsNamedAndNothingWritten) {
  const std::string dir = temp_dir("report_tool_bad");
  const auto missing = frugal::testing::run_program(
      FRUGAL_REPORT_TOOL, frugal::testing::shell_quote(dir), dir, "missing");
  EXPECT_EQ(missing.exit_code, 1) << missing.describe();
  EXPECT_NE(missing.err.find("cannot read '" + (fs::path(dir) / "metrics.csv").string() + "'"),
            std::string::npos)
      << missing.describe();
  std::ofstream(fs::path(dir) / "metrics.csv") << "epoch,step,loss\n0,\"1\n";
  const auto bad = frugal::testing::run_program(FRUGAL_REPORT_TOOL,
                                                frugal::testing::shell_quote(dir), dir, "bad");
  EXPECT_EQ(bad.exit_code, 1) << bad.describe();
  EXPECT_NE(bad.err.find("a quoted cell is not closed"), std::string::npos) << bad.describe();
  EXPECT_NE(bad.err.find((fs::path(dir) / "metrics.csv").string()), std::string::npos)
      << bad.describe();
  EXPECT_FALSE(fs::exists(fs::path(dir) / "report.html"));
  const auto no_dir = frugal::testing::run_program(FRUGAL_REPORT_TOOL, "", dir, "no_dir");
  EXPECT_NE(no_dir.exit_code, 0) << no_dir.describe();
  EXPECT_NE(no_dir.err.find("dir is required"), std::string::npos) << no_dir.describe();
}
#endif

// ---- the planner's page ----

namespace {

frugal::TrialsReport fabricated_plan() {
  using Status = frugal::TrialResult::Status;
  constexpr double kMiB = 1024.0 * 1024.0;
  frugal::TrialsReport report;
  report.device = "cpu";
  report.train_samples = 5900;
  report.full_train_samples = 59000;
  report.val_samples = 1000;
  report.options.max_memory_bytes(64 * kMiB).epochs(2);
  auto result = [](const char* model, int64_t micro, Status status, int64_t rank, double peak_mib,
                   double full_epoch_s, double acc, const char* reason) {
    frugal::TrialResult r;
    r.config.model = model;
    r.config.micro_batch = micro;
    r.status = status;
    r.rank = rank;
    r.peak_bytes = peak_mib < 0 ? -1 : static_cast<int64_t>(peak_mib * kMiB);
    r.full_epoch_seconds = full_epoch_s;
    r.val_acc = acc;
    r.reason = reason;
    if (rank > 0) r.score = 1.0 / static_cast<double>(rank);
    return r;
  };
  report.results = {
      result("cnn", 64, Status::kRanked, 1, 20, 30, 0.85, ""),
      result("mlp", 64, Status::kRanked, 2, 8, 10, 0.80, ""),
      result("resnet", 128, Status::kOverLimit, 0, 96, 60, 0.88, "peak 96.0 MiB > limit 64.0 MiB"),
      result("zoo", 32, Status::kFailed, 0, -1, NAN, NAN, "out of memory"),
  };
  return report;
}

// The cx of every circle in the group of `series` within `svg`.
std::vector<double> circle_xs(const std::string& svg, const std::string& series) {
  const size_t at = svg.find("data-series=\"" + series + "\"");
  if (at == std::string::npos) return {};
  const std::string group = svg.substr(at, svg.find("</g>", at) - at);
  std::vector<double> xs;
  const std::regex cx("cx=\"([0-9.]+)\"");
  for (std::sregex_iterator it(group.begin(), group.end(), cx), end; it != end; ++it) {
    xs.push_back(std::stod((*it)[1].str()));
  }
  return xs;
}

}  // namespace

TEST(PlanReport, ScattersEveryCandidateThatRanWithTheBudgetAndTheReasons) {
  const std::string html = frugal::render_trials_report(fabricated_plan());
  const size_t time_at = html.find("data-title=\"Accuracy against time per epoch\"");
  const size_t memory_at = html.find("data-title=\"Accuracy against peak memory\"");
  ASSERT_NE(time_at, std::string::npos);
  ASSERT_NE(memory_at, std::string::npos);
  ASSERT_LT(time_at, memory_at);
  const std::string time_chart = html.substr(time_at, memory_at - time_at);
  const std::string memory_chart =
      html.substr(memory_at, html.find("</svg>", memory_at) - memory_at);
  // Two ranked and one over the limit in each chart; the failed one has nothing to plot.
  EXPECT_EQ(points_of(time_chart, "ranked"), 2);
  EXPECT_EQ(points_of(time_chart, "over limit"), 1);
  EXPECT_EQ(points_of(memory_chart, "ranked"), 2);
  EXPECT_EQ(points_of(memory_chart, "over limit"), 1);
  EXPECT_EQ(html.find("data-series=\"failed\""), std::string::npos);
  EXPECT_NE(time_chart.find(">estimated seconds per epoch over all 59000 training samples<"),
            std::string::npos);
  EXPECT_NE(memory_chart.find(">peak RSS growth (MiB)<"), std::string::npos);
  EXPECT_NE(memory_chart.find("y-label\""), std::string::npos);
  // The budget: a vertical line at 64 MiB, between the ranked points and the one over it.
  EXPECT_EQ(time_chart.find("data-label=\"budget\""), std::string::npos);
  const std::regex budget_re("data-label=\"budget\"><line x1=\"([0-9.]+)\"");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(memory_chart, m, budget_re));
  const double budget_x = std::stod(m[1].str());
  const auto ranked_x = circle_xs(memory_chart, "ranked");
  const auto over_x = circle_xs(memory_chart, "over limit");
  ASSERT_EQ(ranked_x.size(), 2u);
  ASSERT_EQ(over_x.size(), 1u);
  for (double x : ranked_x) EXPECT_LT(x, budget_x);
  EXPECT_GT(over_x[0], budget_x);
  // Points carry their table row; the table lists all four in order, with the reasons.
  EXPECT_NE(memory_chart.find(">3</text>"), std::string::npos);
  const std::regex row_re(
      "<tr class=\"(ranked|out)\"><td>(\\d+)</td><td>([-0-9]+)</td><td>([^<]*)</td>");
  std::vector<std::string> rows;
  for (std::sregex_iterator it(html.begin(), html.end(), row_re), end; it != end; ++it) {
    rows.push_back((*it)[2].str() + " " + (*it)[3].str() + " " + (*it)[4].str());
  }
  EXPECT_EQ(rows, (std::vector<std::string>{"1 1 cnn 32 micro-batch 64 x 1 lr 0.001",
                                            "2 2 mlp 32 micro-batch 64 x 1 lr 0.001",
                                            "3 - resnet 32 micro-batch 128 x 1 lr 0.001",
                                            "4 - zoo 32 micro-batch 32 x 1 lr 0.001"}));
  EXPECT_NE(html.find("<td>over limit: peak 96.0 MiB &gt; limit 64.0 MiB</td>"), std::string::npos);
  EXPECT_NE(html.find("<td>failed: out of memory</td>"), std::string::npos);
  EXPECT_NE(html.find("Best: cnn 32 micro-batch 64 x 1 lr 0.001"), std::string::npos);
  EXPECT_NE(html.find("Memory budget: 64.0 MiB"), std::string::npos);
  for (const char* bad : {"http:", "https:", "<script", "src=", "href="}) {
    EXPECT_EQ(html.find(bad), std::string::npos) << bad;
  }
}

// ---- in a browser ----

namespace {

// The remote addresses a page asked for, from a Chromium net log (--log-net-log): every
// URL_REQUEST_START_JOB to an http(s)/ws(s)/ftp URL that the page initiated. Chromium's own
// background traffic (component updater, accounts, network time), which the --disable-* flags do
// not silence entirely, starts with "initiator":"not an origin" and is not the page's; a page
// opened from a file asks with "initiator":"null".
std::vector<std::string> page_requests(const std::string& netlog) {
  const std::regex job(
      "\"initiator\":\"([^\"]*)\"(?:,\"[a-z_]+\":(?:\"[^\"]*\"|[-0-9a-z.]+))*,\"url\":\"([^\"]*)"
      "\"");
  const std::regex remote("^(https?|wss?|ftp)://.*");
  std::vector<std::string> urls;
  for (std::sregex_iterator it(netlog.begin(), netlog.end(), job), end; it != end; ++it) {
    const std::string url = (*it)[2].str();
    if ((*it)[1].str() != "not an origin" && std::regex_match(url, remote)) urls.push_back(url);
  }
  return urls;
}

struct Chromium {
  std::string program;
  std::string dir;
  // Runs it headless on the file `page` with `args`, a fresh profile and a net log of its own
  // (`name`.netlog.json); no name resolves, so nothing can reach a network whatever happens.
  frugal::testing::ProgramRun open(const std::string& page, const std::string& args,
                                   const std::string& name) const {
    const std::string flags =
        "--headless --no-sandbox --disable-gpu --disable-background-networking --no-first-run "
        "--disable-sync --disable-component-update --disable-default-apps "
        "--host-resolver-rules='MAP * ~NOTFOUND' --user-data-dir=" +
        frugal::testing::shell_quote((fs::path(dir) / (name + ".profile")).string()) +
        " --log-net-log=" + frugal::testing::shell_quote(netlog(name)) + " ";
    return frugal::testing::run_program(
        program,
        flags + args + " " + frugal::testing::shell_quote("file://" + fs::absolute(page).string()),
        dir, name);
  }
  std::string netlog(const std::string& name) const {
    return (fs::path(dir) / (name + ".netlog.json")).string();
  }
};

}  // namespace

TEST(RunReport, HeadlessChromiumRendersItWithoutNetwork) {
  Chromium chromium;
  for (const char* c : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (fs::exists(c)) chromium.program = c;
  }
  if (chromium.program.empty()) {
    GTEST_SKIP() << "chromium is not installed (apt-get install chromium; scripts/test does)";
  }
  chromium.dir = temp_dir("report_chromium");
  std::ofstream(fs::path(chromium.dir) / "metrics.csv") << kMetrics;
  const std::string page = frugal::write_run_report(chromium.dir, sample_info());

  // The DOM after parsing, as the browser holds it: every series, every axis label.
  const auto dom = chromium.open(page, "--dump-dom", "dom");
  ASSERT_EQ(dom.exit_code, 0) << dom.describe();
  expect_complete_page(dom.out);
  EXPECT_NE(dom.out.find("<title>sample run</title>"), std::string::npos);

  // A phone-sized screenshot (412 px wide, as a common Android phone).
  const std::string shot = (fs::path(chromium.dir) / "report.png").string();
  const auto png = chromium.open(
      page,
      "--hide-scrollbars --window-size=412,2400 --screenshot=" + frugal::testing::shell_quote(shot),
      "shot");
  ASSERT_EQ(png.exit_code, 0) << png.describe();
  ASSERT_TRUE(fs::exists(shot));
  EXPECT_GT(fs::file_size(shot), 10000u) << "a page with plots, not a blank one";
  EXPECT_EQ(read_text(shot).substr(1, 3), "PNG");

  // No request left the file, in either run.
  for (const char* run : {"dom", "shot"}) {
    const std::string netlog = read_text(chromium.netlog(run));
    ASSERT_NE(netlog.find("URL_REQUEST_START_JOB"), std::string::npos) << "no net log of " << run;
    EXPECT_EQ(page_requests(netlog), std::vector<std::string>{}) << run;
  }
  // The check sees a page's request: a page with one image on a (never resolved) address.
  const std::string control = (fs::path(chromium.dir) / "control.html").string();
  std::ofstream(control)
      << "<!DOCTYPE html><p>control</p><img src=\"http://frugal.invalid/a.png\">";
  ASSERT_EQ(chromium.open(control, "--dump-dom", "control").exit_code, 0);
  EXPECT_EQ(page_requests(read_text(chromium.netlog("control"))),
            std::vector<std::string>{"http://frugal.invalid/a.png"});
}
