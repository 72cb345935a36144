// ModelCheckpoint: option checks, file names, top-k on disk, save_last, the three triggers, when
// nothing may be saved, its state across a resume, and ckpt_path "last" / "best".
#include <frugal/frugal.h>
#include <frugal/io/checkpoint.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <thread>

#include "test_support.h"

namespace fs = std::filesystem;

using frugal::ModelCheckpoint;
using frugal::ModelCheckpointOptions;
using frugal::Trainer;
using frugal::testing::error_message;
using frugal::testing::quiet_options;
using frugal::testing::temp_dir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

torch::nn::Sequential tiny_net(uint64_t seed = 0) {
  torch::manual_seed(seed);
  return torch::nn::Sequential(torch::nn::Linear(8, 3));
}

/// A classifier whose validation also logs "val/score" = scores[epoch]: a scripted metric.
struct Scripted : frugal::Classifier {
  Scripted(torch::nn::Sequential net, std::vector<double> scores)
      : frugal::Classifier(net, frugal::SGD(0.1)), scores(std::move(scores)) {}
  void validation_step(const frugal::Batch& batch, frugal::StepContext& ctx) override {
    frugal::Classifier::validation_step(batch, ctx);
    ctx.log("val/score", scores.at(static_cast<size_t>(ctx.trainer().state().epoch)));
  }
  std::vector<double> scores;
};

std::shared_ptr<frugal::TensorLoader> loader(int64_t n, int64_t batch_size) {
  auto d = frugal::testing::make_toy_data(n);
  return std::make_shared<frugal::TensorLoader>(d.x, d.y, frugal::TensorLoaderOptions(batch_size));
}

/// The *.ckpt files under `dir`, as paths relative to it.
std::set<std::string> ckpt_files(const std::string& dir) {
  std::set<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".ckpt") {
      out.insert(fs::relative(e.path(), dir).string());
    }
  }
  return out;
}

std::string name_of(const std::string& path) { return fs::path(path).filename().string(); }

/// Runs a function at chosen hooks (after the callbacks before it in the list).
struct Probe : frugal::Callback {
  std::function<void(Trainer&)> validation_end, epoch_end, batch_end, sanity_end;
  void on_validation_end(Trainer& t, frugal::Task&) override {
    if (validation_end && !t.state().sanity_checking) validation_end(t);
  }
  void on_train_epoch_end(Trainer& t, frugal::Task&) override {
    if (epoch_end) epoch_end(t);
  }
  void on_train_batch_end(Trainer& t, frugal::Task&, const at::Tensor&, const frugal::Batch&,
                          int64_t) override {
    if (batch_end) batch_end(t);
  }
  void on_sanity_check_end(Trainer& t, frugal::Task&) override {
    if (sanity_end) sanity_end(t);
  }
};

/// Fits `scores.size()` epochs of 2 training batches, validating each epoch.
void fit_scripted(const std::string& dir, std::shared_ptr<ModelCheckpoint> ckpt,
                  std::vector<double> scores,
                  std::vector<std::shared_ptr<frugal::Callback>> more = {},
                  const std::string& ckpt_path = "", int64_t max_epochs = -1) {
  Scripted task(tiny_net(), scores);
  std::vector<std::shared_ptr<frugal::Callback>> callbacks{ckpt};
  for (auto& cb : more) callbacks.push_back(cb);
  Trainer trainer(quiet_options(dir).max_epochs(max_epochs < 0 ? static_cast<int64_t>(scores.size())
                                                               : max_epochs),
                  callbacks);
  trainer.fit(task, loader(8, 4), loader(8, 8), ckpt_path);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// options

TEST(ModelCheckpoint, RefusesBadOptionsNamingThem) {
  auto make = [](ModelCheckpointOptions o) {
    return error_message([&] { ModelCheckpoint cb(o); });
  };
  EXPECT_THAT(make(ModelCheckpointOptions().every_n_epochs(2).every_n_train_steps(10)),
              HasSubstr("every_n_epochs=2, every_n_train_steps=10"));
  EXPECT_THAT(make(ModelCheckpointOptions().every_n_train_steps(5).train_time_interval_seconds(60)),
              HasSubstr("every_n_train_steps=5, train_time_interval_seconds=60"));
  EXPECT_THAT(make(ModelCheckpointOptions().save_top_k(-2)), HasSubstr("save_top_k must be >= -1"));
  EXPECT_THAT(make(ModelCheckpointOptions().save_top_k(3)),
              HasSubstr("save_top_k=3 needs a monitor"));
  EXPECT_THAT(make(ModelCheckpointOptions().monitor("val/loss").mode("avg")),
              HasSubstr("mode must be \"min\" or \"max\", got \"avg\""));
  EXPECT_THAT(make(ModelCheckpointOptions().every_n_epochs(-1)),
              HasSubstr("every_n_epochs must be >= 0, got -1"));
  EXPECT_THAT(make(ModelCheckpointOptions().every_n_train_steps(-3)),
              HasSubstr("every_n_train_steps must be >= 0, got -3"));
  EXPECT_THAT(make(ModelCheckpointOptions().train_time_interval_seconds(-1)),
              HasSubstr("train_time_interval_seconds must be >= 0"));
  EXPECT_THAT(make(ModelCheckpointOptions().filename("{epoch")), HasSubstr("'{' without '}'"));
  EXPECT_THAT(make(ModelCheckpointOptions().filename("epoch}")), HasSubstr("'}' without '{'"));
  EXPECT_THAT(make(ModelCheckpointOptions().filename("{:02d}")), HasSubstr("without a name"));
  EXPECT_EQ(make(ModelCheckpointOptions().monitor("val/loss").save_top_k(3)), "no error");
}

TEST(ModelCheckpoint, DefaultsAndStateKey) {
  ModelCheckpoint plain;
  EXPECT_EQ(plain.options().every_n_epochs(), 1) << "no trigger set: every epoch";
  EXPECT_EQ(plain.options().filename(), "{epoch}-{step}");
  EXPECT_EQ(plain.dirpath(), "");
  EXPECT_EQ(plain.save_dir(), "");
  EXPECT_EQ(plain.state_key(),
            "ModelCheckpoint{monitor=None, mode=min, every_n_train_steps=0, every_n_epochs=1, "
            "train_time_interval=None}");
  ModelCheckpoint timed(ModelCheckpointOptions().monitor("val/acc").mode_max().train_time_interval(
      std::chrono::minutes(2)));
  EXPECT_EQ(timed.options().every_n_epochs(), 0);
  EXPECT_EQ(timed.state_key(),
            "ModelCheckpoint{monitor=val/acc, mode=max, every_n_train_steps=0, every_n_epochs=0, "
            "train_time_interval=120}");
  EXPECT_EQ(timed.best_model_path(), "");
  EXPECT_FALSE(timed.best_model_score().has_value());
}

TEST(ModelCheckpoint, TwoWithTheSameStateKeyAreRefusedWhenTheTrainerIsBuilt) {
  // They differ only in dirpath, which Lightning's state key leaves out; a checkpoint could not
  // keep both states. Stateless callbacks may repeat freely.
  auto a = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions().dirpath("a"));
  auto b = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions().dirpath("b"));
  EXPECT_THAT(error_message([&] {
                Trainer t(quiet_options(), {a, b});
              }),
              HasSubstr("callbacks 0 and 1 share the state key \"ModelCheckpoint{monitor=None"));
  auto c = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions().dirpath("c").monitor("x"));
  EXPECT_EQ(error_message([&] { Trainer t(quiet_options(), {a, c}); }), "no error");
  EXPECT_EQ(error_message([&] {
              Trainer t(quiet_options(), {a, std::make_shared<frugal::LearningRateMonitor>(),
                                          std::make_shared<frugal::LearningRateMonitor>()});
            }),
            "no error");
}

// ---------------------------------------------------------------------------------------------
// file names

TEST(ModelCheckpoint, FormatsNamesLikeLightning) {
  const std::map<std::string, double> m{{"val/acc", 0.91234}, {"val_loss", 0.3214}, {"n", 7.0}};
  EXPECT_EQ(ModelCheckpoint().format_checkpoint_name(m, 3, 10), "epoch=3-step=10.ckpt");
  ModelCheckpoint spec(ModelCheckpointOptions().filename("{epoch:02d}-{val/acc:.4f}"));
  EXPECT_EQ(spec.format_checkpoint_name(m, 3, 10), "epoch=03-val_acc=0.9123.ckpt")
      << "'/' in an inserted name becomes '_', the value comes from the real name";
  EXPECT_EQ(spec.format_checkpoint_name(m, 3, 10, 2), "epoch=03-val_acc=0.9123-v2.ckpt");
  ModelCheckpoint bare(ModelCheckpointOptions()
                           .filename("model_{epoch:03d}_{val_loss:.2f}_{step}")
                           .auto_insert_metric_name(false));
  EXPECT_EQ(bare.format_checkpoint_name(m, 4, 100), "model_004_0.32_100.ckpt");
  ModelCheckpoint plain_value(ModelCheckpointOptions().filename("{val_loss}"));
  EXPECT_EQ(plain_value.format_checkpoint_name(m, 0, 0), "val_loss=0.3214.ckpt");
  ModelCheckpoint integral(ModelCheckpointOptions().filename("{n:03d}"));
  EXPECT_EQ(integral.format_checkpoint_name(m, 0, 0), "n=007.ckpt")
      << "an integral logged value takes an integer spec";
  ModelCheckpoint logged_epoch(ModelCheckpointOptions().filename("{epoch}"));
  EXPECT_EQ(logged_epoch.format_checkpoint_name({{"epoch", 9.0}}, 1, 1), "epoch=9.ckpt")
      << "a logged metric named epoch wins, as in Lightning";
}

TEST(ModelCheckpoint, UnknownMetricOrBadSpecInTheNameIsAClearError) {
  ModelCheckpoint cb(ModelCheckpointOptions().filename("{epoch}-{val/los:.3f}"));
  const std::string e = error_message([&] {
    cb.format_checkpoint_name({{"val/loss", 1.0}, {"train/loss", 2.0}}, 0, 1);
  });
  EXPECT_THAT(e, HasSubstr("uses \"val/los\", which was not logged"));
  EXPECT_THAT(e, HasSubstr("available: epoch, step, train/loss, val/loss"));
  ModelCheckpoint bad(ModelCheckpointOptions().filename("{val/loss:d}"));
  EXPECT_THAT(error_message([&] {
                bad.format_checkpoint_name({{"val/loss", 0.5}}, 0, 1);
              }),
              HasSubstr("format spec \"d\" does not fit \"val/loss\""));
}

TEST(ModelCheckpoint, NameCollisionsGetVersionSuffixes) {
  // "{epoch}" names both step-triggered saves of an epoch alike: the second gets -v1.
  const std::string dir = temp_dir("mc_versions");
  auto cb = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().dirpath(dir).filename("{epoch}").every_n_train_steps(1).save_top_k(
          -1));
  fit_scripted(dir, cb, {1.0, 2.0});
  EXPECT_THAT(ckpt_files(dir), UnorderedElementsAre("epoch=0.ckpt", "epoch=0-v1.ckpt",
                                                    "epoch=1.ckpt", "epoch=1-v1.ckpt"));
}

TEST(ModelCheckpoint, SlashInTheLiteralTemplateMakesASubfolder) {
  const std::string dir = temp_dir("mc_subfolder");
  auto cb = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().dirpath(dir).filename("run/{epoch}-{val/score:.1f}").save_top_k(-1));
  fit_scripted(dir, cb, {0.5, 0.25});
  EXPECT_THAT(ckpt_files(dir), UnorderedElementsAre("run/epoch=0-val_score=0.5.ckpt",
                                                    "run/epoch=1-val_score=0.2.ckpt"));
}

// ---------------------------------------------------------------------------------------------
// top-k

TEST(ModelCheckpoint, TopKKeepsTheBestFilesAndDeletesTheOthers) {
  const std::string dir = temp_dir("mc_topk");
  auto cb = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions()
                                                  .dirpath(dir)
                                                  .filename("{epoch}-{val/score:.1f}")
                                                  .monitor("val/score")
                                                  .save_top_k(2));
  std::vector<std::set<std::string>> seen;
  auto probe = std::make_shared<Probe>();
  probe->validation_end = [&](Trainer&) { seen.push_back(ckpt_files(dir)); };
  fit_scripted(dir, cb, {5, 3, 4, 1, 2}, {probe});
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_THAT(seen[0], UnorderedElementsAre("epoch=0-val_score=5.0.ckpt"));
  EXPECT_THAT(seen[1],
              UnorderedElementsAre("epoch=0-val_score=5.0.ckpt", "epoch=1-val_score=3.0.ckpt"));
  EXPECT_THAT(seen[2],
              UnorderedElementsAre("epoch=1-val_score=3.0.ckpt", "epoch=2-val_score=4.0.ckpt"));
  EXPECT_THAT(seen[3],
              UnorderedElementsAre("epoch=1-val_score=3.0.ckpt", "epoch=3-val_score=1.0.ckpt"));
  EXPECT_THAT(seen[4],
              UnorderedElementsAre("epoch=3-val_score=1.0.ckpt", "epoch=4-val_score=2.0.ckpt"));
  EXPECT_EQ(cb->best_model_path(), dir + "/epoch=3-val_score=1.0.ckpt");
  EXPECT_EQ(cb->best_model_score(), 1.0);
  EXPECT_EQ(name_of(cb->kth_best_model_path()), "epoch=4-val_score=2.0.ckpt");
  EXPECT_EQ(cb->kth_value(), 2.0);
  EXPECT_EQ(cb->current_score(), 2.0);
  const auto best_k = cb->best_k_models();
  ASSERT_EQ(best_k.size(), 2u);
  EXPECT_EQ(best_k.at(dir + "/epoch=3-val_score=1.0.ckpt"), 1.0);
  EXPECT_EQ(best_k.at(dir + "/epoch=4-val_score=2.0.ckpt"), 2.0);
  EXPECT_EQ(cb->last_model_path(), "");
}

TEST(ModelCheckpoint, ModeMaxKeepsTheLargest) {
  const std::string dir = temp_dir("mc_max");
  std::ostringstream out;
  auto cb = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions()
                                                  .dirpath(dir)
                                                  .filename("{epoch}")
                                                  .monitor("val/score")
                                                  .mode_max()
                                                  .verbose(true)
                                                  .out(&out));
  fit_scripted(dir, cb, {0.1, 0.5, 0.3, 0.7, 0.6});
  EXPECT_THAT(ckpt_files(dir), ElementsAre("epoch=3.ckpt"));
  EXPECT_EQ(cb->best_model_score(), 0.7);
  EXPECT_EQ(name_of(cb->best_model_path()), "epoch=3.ckpt");
  EXPECT_THAT(out.str(), HasSubstr("Epoch 3, global step 8: \"val/score\" reached 0.70000 (best "
                                   "0.70000), saving model to \"" +
                                   dir + "/epoch=3.ckpt\" as top 1"));
  EXPECT_THAT(out.str(), HasSubstr("Epoch 4, global step 10: \"val/score\" was not in top 1"));
}

TEST(ModelCheckpoint, NanScoresNeverCountAsBest) {
  for (bool max : {false, true}) {
    SCOPED_TRACE(max ? "max" : "min");
    const std::string dir = temp_dir("mc_nan");
    auto options = ModelCheckpointOptions().dirpath(dir).filename("{epoch}").monitor("val/score");
    if (max) options.mode_max();
    auto cb = std::make_shared<ModelCheckpoint>(options);
    std::vector<std::string> best;
    auto probe = std::make_shared<Probe>();
    probe->validation_end = [&](Trainer&) { best.push_back(name_of(cb->best_model_path())); };
    fit_scripted(dir, cb, {kNaN, 2.0, kNaN, max ? 3.0 : 1.0, kNaN}, {probe});
    // A NaN is saved while there is room (it is the only file) but is never the best, and any
    // number replaces it; later NaNs never replace a number.
    EXPECT_THAT(best,
                ElementsAre("", "epoch=1.ckpt", "epoch=1.ckpt", "epoch=3.ckpt", "epoch=3.ckpt"));
    EXPECT_THAT(ckpt_files(dir), ElementsAre("epoch=3.ckpt"));
    EXPECT_EQ(cb->best_model_score(), max ? 3.0 : 1.0);
  }
  // With room for all, NaN files are kept but ranked worst.
  const std::string dir = temp_dir("mc_nan_all");
  auto cb = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().dirpath(dir).filename("{epoch}").monitor("val/score").save_top_k(2));
  fit_scripted(dir, cb, {kNaN, kNaN, 4.0});
  EXPECT_THAT(ckpt_files(dir), UnorderedElementsAre("epoch=1.ckpt", "epoch=2.ckpt"))
      << "the first NaN file is pushed out first";
  EXPECT_EQ(name_of(cb->best_model_path()), "epoch=2.ckpt");
  EXPECT_TRUE(std::isnan(cb->kth_value()));
}

TEST(ModelCheckpoint, SaveTopKZeroSavesNothingButLast) {
  const std::string dir = temp_dir("mc_top0");
  auto none = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().dirpath(dir + "/none").monitor("val/score").save_top_k(0));
  // Two instances need different state keys (monitor, mode or trigger), as in Lightning.
  auto last = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions()
                                                    .dirpath(dir + "/last")
                                                    .monitor("val/loss")
                                                    .save_top_k(0)
                                                    .save_last(true));
  fit_scripted(dir, none, {3, 2, 1}, {last});
  EXPECT_TRUE(ckpt_files(dir + "/none").empty());
  EXPECT_THAT(ckpt_files(dir + "/last"), ElementsAre("last.ckpt"));
  EXPECT_EQ(last->last_model_path(), dir + "/last/last.ckpt");
  EXPECT_EQ(last->best_model_path(), "");
  EXPECT_TRUE(last->best_k_models().empty());
}

TEST(ModelCheckpoint, SaveTopKMinusOneKeepsEverything) {
  const std::string dir = temp_dir("mc_topall");
  auto ranked = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions()
                                                      .dirpath(dir + "/ranked")
                                                      .filename("{epoch}")
                                                      .monitor("val/score")
                                                      .save_top_k(-1));
  auto latest = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().dirpath(dir + "/latest").filename("{epoch}").save_top_k(-1));
  fit_scripted(dir, ranked, {3, 1, 2}, {latest});
  EXPECT_THAT(ckpt_files(dir + "/ranked"),
              UnorderedElementsAre("epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"));
  EXPECT_EQ(name_of(ranked->best_model_path()), "epoch=1.ckpt");
  EXPECT_EQ(ranked->best_k_models().size(), 3u);
  EXPECT_EQ(name_of(ranked->kth_best_model_path()), "epoch=0.ckpt");
  EXPECT_EQ(ranked->kth_value(), 3.0);
  EXPECT_THAT(ckpt_files(dir + "/latest"),
              UnorderedElementsAre("epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"));
  EXPECT_EQ(name_of(latest->best_model_path()), "epoch=2.ckpt") << "no monitor: the latest";
}

TEST(ModelCheckpoint, WithoutMonitorTopOneKeepsOnlyTheLatest) {
  const std::string dir = temp_dir("mc_latest");
  auto cb = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions().dirpath(dir));
  fit_scripted(dir, cb, {1, 1, 1});
  EXPECT_THAT(ckpt_files(dir), ElementsAre("epoch=2-step=6.ckpt"));
  EXPECT_EQ(cb->best_model_path(), dir + "/epoch=2-step=6.ckpt");
  EXPECT_FALSE(cb->best_model_score().has_value());
}

TEST(ModelCheckpoint, TheCheckpointAFitResumedFromIsNeverDeleted) {
  // As Lightning's _should_remove_checkpoint: top-1 without a monitor replaces its file at every
  // save, but not the one the run resumed from (it may be the only good copy).
  const std::string dir = temp_dir("mc_resumed_from");
  fit_scripted(dir, std::make_shared<ModelCheckpoint>(ModelCheckpointOptions().dirpath(dir)),
               {1, 1});
  const std::string from = dir + "/epoch=1-step=4.ckpt";
  ASSERT_THAT(ckpt_files(dir), ElementsAre("epoch=1-step=4.ckpt"));
  Scripted task(tiny_net(), {1, 1, 1, 1});
  Trainer trainer(quiet_options(dir).max_epochs(4),
                  {std::make_shared<ModelCheckpoint>(ModelCheckpointOptions().dirpath(dir))});
  trainer.fit(task, loader(8, 4), loader(8, 8), from);
  EXPECT_EQ(trainer.ckpt_path(), from);
  EXPECT_THAT(ckpt_files(dir), UnorderedElementsAre("epoch=1-step=4.ckpt", "epoch=3-step=8.ckpt"));
}

// ---------------------------------------------------------------------------------------------
// save_last

TEST(ModelCheckpoint, SaveLastIsWrittenWithEachSavedCheckpoint) {
  const std::string dir = temp_dir("mc_last");
  auto cb = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions()
                                                  .dirpath(dir)
                                                  .filename("{epoch}")
                                                  .monitor("val/score")
                                                  .save_last(true));
  std::vector<bool> last_written;  // did last.ckpt change at this epoch's validation end?
  fs::file_time_type before{};
  auto probe = std::make_shared<Probe>();
  probe->validation_end = [&](Trainer&) {
    const auto now = fs::last_write_time(dir + "/last.ckpt");
    last_written.push_back(last_written.empty() || now != before);
    before = now;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // distinct modification times
  };
  fit_scripted(dir, cb, {3, 1, 2}, {probe});
  EXPECT_THAT(ckpt_files(dir), UnorderedElementsAre("epoch=1.ckpt", "last.ckpt"));
  EXPECT_THAT(last_written, ElementsAre(true, true, false))
      << "Lightning 2.6: last.ckpt only with a saved top-k file";
  EXPECT_EQ(cb->last_model_path(), dir + "/last.ckpt");
  // It holds the state of epoch 1 (the best), written by Trainer::save_checkpoint.
  auto from_last = tiny_net(1);
  auto from_best = tiny_net(2);
  frugal::load_weights(*from_last, dir + "/last.ckpt");
  frugal::load_weights(*from_best, dir + "/epoch=1.ckpt");
  EXPECT_EQ(frugal::testing::params_sha256(*from_last), frugal::testing::params_sha256(*from_best));
}

TEST(ModelCheckpoint, SaveWeightsOnlyWritesLoadableWeights) {
  const std::string dir = temp_dir("mc_weights");
  auto cb = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().dirpath(dir + "/w").filename("w").save_weights_only(true));
  auto full = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().dirpath(dir + "/f").filename("f").monitor("val/score"));
  fit_scripted(dir, cb, {1.0}, {full});
  auto net = tiny_net(5);
  frugal::load_weights(*net, dir + "/w/w.ckpt");
  EXPECT_LT(fs::file_size(dir + "/w/w.ckpt"), fs::file_size(dir + "/f/f.ckpt"));
  Scripted task(tiny_net(), {1.0, 1.0});
  Trainer trainer(quiet_options(dir).max_epochs(2));
  EXPECT_THAT(error_message([&] { trainer.fit(task, loader(8, 4), {}, dir + "/w/w.ckpt"); }),
              HasSubstr("weights only"));
}

TEST(ModelCheckpoint, SaveBestSafetensorsHoldsTheBestCheckpointsWeights) {
  const std::string dir = temp_dir("mc_safetensors");
  auto cb = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions()
                                                  .dirpath(dir)
                                                  .filename("{epoch}-{val/score:.1f}")
                                                  .monitor("val/score")
                                                  .save_top_k(2)
                                                  .save_best_safetensors(true));
  std::vector<std::string> written_for;
  auto probe = std::make_shared<Probe>();
  probe->validation_end = [&](Trainer&) {
    std::map<std::string, std::string> meta;
    frugal::read_safetensors(dir + "/best.safetensors", &meta);
    written_for.push_back(meta.at("checkpoint") + "@" + meta.at("epoch"));
  };
  fit_scripted(dir, cb, {5, 3, 4, 1, 2}, {probe});
  // Rewritten when the best changes (epochs 0, 1, 3), left alone otherwise.
  EXPECT_EQ(written_for, (std::vector<std::string>{
                             "epoch=0-val_score=5.0.ckpt@0", "epoch=1-val_score=3.0.ckpt@1",
                             "epoch=1-val_score=3.0.ckpt@1", "epoch=3-val_score=1.0.ckpt@3",
                             "epoch=3-val_score=1.0.ckpt@3"}));
  auto from_ckpt = tiny_net(7);
  frugal::load_weights(*from_ckpt, cb->best_model_path());
  auto from_st = tiny_net(8);
  frugal::load_state_dict(*from_st, dir + "/best.safetensors");
  for (const auto& [k, t] : frugal::module_state(*from_ckpt))
    EXPECT_TRUE(torch::equal(t, frugal::module_state(*from_st).at(k))) << k;
}

// ---------------------------------------------------------------------------------------------
// triggers

TEST(ModelCheckpoint, EveryNTrainStepsCountsOptimizerStepsWithAccumulation) {
  // 8 batches of 1, two per optimizer step: 4 steps per epoch, steps 1..8 over two epochs.
  const std::string dir = temp_dir("mc_steps");
  auto cb = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().dirpath(dir).filename("{step}").every_n_train_steps(2).save_top_k(
          -1));
  std::vector<int64_t> saved_at_batch;
  size_t files = 0;
  auto probe = std::make_shared<Probe>();
  probe->batch_end = [&](Trainer& t) {
    const size_t now = ckpt_files(dir).size();
    if (now != files) saved_at_batch.push_back(t.state().epoch * 8 + t.state().batch_idx);
    files = now;
  };
  Scripted task(tiny_net(), {1, 1});
  Trainer trainer(quiet_options(dir).max_epochs(2).accumulate_grad_batches(2), {cb, probe});
  trainer.fit(task, loader(8, 1), loader(8, 8));
  EXPECT_THAT(ckpt_files(dir),
              UnorderedElementsAre("step=2.ckpt", "step=4.ckpt", "step=6.ckpt", "step=8.ckpt"))
      << "once per step (not per micro-batch), and no epoch-end saves";
  EXPECT_THAT(saved_at_batch, ElementsAre(3, 7, 11, 15)) << "at the batch that stepped";
}

TEST(ModelCheckpoint, StepTriggerWithAValidationMetricWaitsForValidation) {
  // every step, monitoring a validation metric: the first two steps come before any validation,
  // so their save happens once at the first validation end (step 2); afterwards the metric
  // exists and each step saves.
  const std::string dir = temp_dir("mc_deferred");
  auto cb = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions()
                                                  .dirpath(dir)
                                                  .filename("{step}-{val/score:.0f}")
                                                  .monitor("val/score")
                                                  .every_n_train_steps(1)
                                                  .save_top_k(-1));
  std::set<std::string> after_first_epoch;
  auto probe = std::make_shared<Probe>();
  probe->epoch_end = [&](Trainer& t) {
    if (t.state().epoch == 0) after_first_epoch = ckpt_files(dir);
  };
  fit_scripted(dir, cb, {7, 8}, {probe});
  EXPECT_THAT(after_first_epoch, ElementsAre("step=2-val_score=7.ckpt"));
  EXPECT_THAT(ckpt_files(dir),
              UnorderedElementsAre("step=2-val_score=7.ckpt", "step=3-val_score=7.ckpt",
                                   "step=4-val_score=7.ckpt"))
      << "steps 3 and 4 use the latest validation value";
}

TEST(ModelCheckpoint, EveryNEpochsWithAndWithoutValidation) {
  for (bool validate : {true, false}) {
    SCOPED_TRACE(validate ? "with validation" : "without validation");
    const std::string dir = temp_dir("mc_epochs");
    auto cb = std::make_shared<ModelCheckpoint>(
        ModelCheckpointOptions().dirpath(dir).filename("{epoch}").every_n_epochs(2).save_top_k(-1));
    std::vector<std::string> saved_in;  // which hook saw a new file first
    size_t files = 0;
    auto probe = std::make_shared<Probe>();
    probe->validation_end = [&](Trainer&) {
      if (ckpt_files(dir).size() != files) saved_in.push_back("validation_end");
      files = ckpt_files(dir).size();
    };
    probe->epoch_end = [&](Trainer&) {
      if (ckpt_files(dir).size() != files) saved_in.push_back("train_epoch_end");
      files = ckpt_files(dir).size();
    };
    Scripted task(tiny_net(), {1, 1, 1, 1, 1});
    Trainer trainer(quiet_options(dir).max_epochs(5), {cb, probe});
    trainer.fit(task, loader(8, 4), validate ? loader(8, 8) : nullptr);
    EXPECT_THAT(ckpt_files(dir), UnorderedElementsAre("epoch=1.ckpt", "epoch=3.ckpt"));
    const std::string hook = validate ? "validation_end" : "train_epoch_end";
    EXPECT_THAT(saved_in, ElementsAre(hook, hook));
  }
}

TEST(ModelCheckpoint, TrainTimeIntervalSavesAfterTheIntervalHasPassed) {
  // Each batch takes >= 120 ms; with a 200 ms interval, a save comes every second batch at most.
  const std::string dir = temp_dir("mc_time");
  auto slow = std::make_shared<Probe>();
  slow->batch_end = [](Trainer&) { std::this_thread::sleep_for(std::chrono::milliseconds(120)); };
  auto cb = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions()
                                                  .dirpath(dir)
                                                  .filename("{step}")
                                                  .train_time_interval_seconds(0.2)
                                                  .save_top_k(-1));
  Scripted task(tiny_net(), {1});
  Trainer trainer(quiet_options(dir).max_epochs(1), {slow, cb});
  trainer.fit(task, loader(6, 1), loader(8, 8));
  std::vector<int64_t> steps;
  for (const auto& f : ckpt_files(dir)) steps.push_back(std::stoll(f.substr(5)));
  std::sort(steps.begin(), steps.end());
  ASSERT_GE(steps.size(), 2u);
  ASSERT_LE(steps.size(), 3u);
  for (size_t i = 1; i < steps.size(); ++i) EXPECT_GE(steps[i] - steps[i - 1], 2);
  EXPECT_THAT(steps, ::testing::Contains(2)) << "the first save after 240 ms";
}

// ---------------------------------------------------------------------------------------------
// when nothing is saved

TEST(ModelCheckpoint, NothingIsSavedInSanityCheckFastDevRunOrValidate) {
  const std::string dir = temp_dir("mc_never");
  {
    auto cb = std::make_shared<ModelCheckpoint>(
        ModelCheckpointOptions().dirpath(dir + "/sanity").save_top_k(-1).filename("{step}"));
    bool empty_after_sanity = false;
    auto probe = std::make_shared<Probe>();
    probe->sanity_end = [&](Trainer&) { empty_after_sanity = ckpt_files(dir + "/sanity").empty(); };
    Scripted task(tiny_net(), {1, 1});
    Trainer trainer(quiet_options(dir).max_epochs(1).num_sanity_val_steps(1), {cb, probe});
    trainer.fit(task, loader(8, 4), loader(8, 8));
    EXPECT_TRUE(empty_after_sanity);
    EXPECT_THAT(ckpt_files(dir + "/sanity"), ElementsAre("step=2.ckpt"));
    trainer.validate(task, loader(8, 8));
    trainer.test(task, loader(8, 8));
    EXPECT_THAT(ckpt_files(dir + "/sanity"), ElementsAre("step=2.ckpt"));
  }
  {
    auto cb = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions()
                                                    .dirpath(dir + "/fast")
                                                    .every_n_train_steps(1)
                                                    .save_last(true)
                                                    .save_top_k(-1));
    Scripted task(tiny_net(), {1});
    Trainer trainer(quiet_options(dir).fast_dev_run(2), {cb});
    trainer.fit(task, loader(8, 2), loader(8, 4));
    EXPECT_EQ(trainer.state().global_step, 2);
    EXPECT_TRUE(ckpt_files(dir + "/fast").empty());
  }
}

TEST(ModelCheckpoint, MissingMonitorWarnsBeforeValidationAndFailsAfter) {
  const std::string dir = temp_dir("mc_missing");
  std::ostringstream out;
  auto cb = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().dirpath(dir).monitor("val/nope").out(&out));
  Scripted task(tiny_net(), {1, 1});
  Trainer no_val(quiet_options(dir).max_epochs(2), {cb});
  no_val.fit(task, loader(8, 4));
  EXPECT_TRUE(ckpt_files(dir).empty());
  EXPECT_THAT(out.str(), HasSubstr("ModelCheckpoint(monitor=\"val/nope\") found no such metric"));
  Trainer with_val(quiet_options(dir).max_epochs(2), {cb});
  EXPECT_THAT(error_message([&] { with_val.fit(task, loader(8, 4), loader(8, 8)); }),
              HasSubstr("logged: train/loss, val/acc, val/loss, val/score"));
}

// ---------------------------------------------------------------------------------------------
// state and resume

TEST(ModelCheckpoint, StateDictRoundTripAndChangedFolder) {
  const std::string dir = temp_dir("mc_state");
  auto options = ModelCheckpointOptions().dirpath(dir).filename("{epoch}").monitor("val/score");
  auto cb = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions(options).save_top_k(2).save_last(true));
  fit_scripted(dir, cb, {5, 3, 4});
  const frugal::StateDict state = cb->state_dict();

  ModelCheckpoint same(ModelCheckpointOptions(options).save_top_k(2));
  same.load_state_dict(state);
  EXPECT_EQ(same.best_model_path(), cb->best_model_path());
  EXPECT_EQ(same.best_model_score(), 3.0);
  EXPECT_EQ(same.best_k_models(), cb->best_k_models());
  EXPECT_EQ(same.kth_best_model_path(), cb->kth_best_model_path());
  EXPECT_EQ(same.kth_value(), 4.0);
  EXPECT_EQ(same.last_model_path(), dir + "/last.ckpt");
  EXPECT_EQ(same.current_score(), 4.0);

  std::ostringstream out;
  ModelCheckpoint moved(ModelCheckpointOptions(options).dirpath(dir + "/elsewhere").out(&out));
  moved.load_state_dict(state);
  EXPECT_THAT(out.str(), HasSubstr("the checkpoint folder changed from \"" + dir + "\""));
  EXPECT_EQ(moved.best_model_path(), cb->best_model_path()) << "as Lightning";
  EXPECT_FALSE(moved.best_model_score().has_value());
  EXPECT_TRUE(moved.best_k_models().empty());
  EXPECT_EQ(moved.last_model_path(), "");

  // Without a configured folder the state waits for setup to resolve it (log_dir/checkpoints).
  ModelCheckpoint later(ModelCheckpointOptions().filename("{epoch}").monitor("val/score"));
  frugal::StateDict moved_state = state;
  moved_state["dirpath"] = dir + "/checkpoints";
  later.load_state_dict(moved_state);
  EXPECT_EQ(later.best_model_path(), "");
  Trainer trainer(quiet_options(dir));
  Scripted task(tiny_net(), {1});
  later.setup(trainer, task, frugal::TrainerFn::kFit);
  EXPECT_EQ(later.save_dir(), dir + "/checkpoints");
  EXPECT_EQ(later.best_model_score(), 3.0);

  EXPECT_THAT(error_message([&] { later.load_state_dict({}); }), HasSubstr("'dirpath'"));
}

TEST(ModelCheckpoint, ResumeKeepsRankingAgainstTheOldFiles) {
  const std::string dir = temp_dir("mc_resume");
  auto options = ModelCheckpointOptions()
                     .dirpath(dir)
                     .filename("{epoch}")
                     .monitor("val/score")
                     .save_top_k(2)
                     .save_last(true);
  const std::vector<double> scores{5, 3, 4, 1};
  auto first = std::make_shared<ModelCheckpoint>(options);
  fit_scripted(dir, first, scores, {}, "", /*max_epochs=*/2);
  EXPECT_THAT(ckpt_files(dir), UnorderedElementsAre("epoch=0.ckpt", "epoch=1.ckpt", "last.ckpt"));

  auto second = std::make_shared<ModelCheckpoint>(options);
  fit_scripted(dir, second, scores, {}, "last", /*max_epochs=*/4);
  EXPECT_THAT(ckpt_files(dir), UnorderedElementsAre("epoch=1.ckpt", "epoch=3.ckpt", "last.ckpt"))
      << "epoch 2 pushed out epoch 0 (from before the resume), epoch 3 pushed out epoch 2";
  EXPECT_EQ(name_of(second->best_model_path()), "epoch=3.ckpt");
  EXPECT_EQ(second->best_model_score(), 1.0);
}

TEST(ModelCheckpoint, ResolvesLastAndBest) {
  const std::string dir = temp_dir("mc_resolve");
  auto cb = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions()
                                                  .dirpath(dir)
                                                  .filename("{epoch}")
                                                  .monitor("val/score")
                                                  .save_top_k(-1));
  EXPECT_EQ(cb->resolve_ckpt_path("last"), "") << "nothing saved yet";
  EXPECT_EQ(cb->resolve_ckpt_path("best"), "");
  fit_scripted(dir, cb, {2, 1, 3});
  EXPECT_EQ(cb->resolve_ckpt_path("best"), dir + "/epoch=1.ckpt");
  // No last.ckpt: the newest file by modification time.
  const auto now = fs::file_time_type::clock::now();
  fs::last_write_time(dir + "/epoch=0.ckpt", now + std::chrono::hours(1));
  fs::last_write_time(dir + "/epoch=2.ckpt", now - std::chrono::hours(1));
  EXPECT_EQ(cb->resolve_ckpt_path("last"), dir + "/epoch=0.ckpt");
  std::ofstream(dir + "/last.ckpt") << "x";
  EXPECT_EQ(cb->resolve_ckpt_path("last"), dir + "/last.ckpt");
  EXPECT_THAT(error_message([&] { cb->resolve_ckpt_path("newest"); }),
              HasSubstr("expected \"last\" or \"best\", got \"newest\""));

  // The Trainer asks its ModelCheckpoint for "best".
  const std::string dir2 = temp_dir("mc_resolve_fit");
  auto again = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions()
                                                     .dirpath(dir)
                                                     .filename("{epoch}")
                                                     .monitor("val/score")
                                                     .save_top_k(-1));
  again->load_state_dict(cb->state_dict());
  Scripted task(tiny_net(), {2, 1, 3, 0});
  Trainer trainer(quiet_options(dir2).max_epochs(3), {again});
  trainer.fit(task, loader(8, 4), loader(8, 8), "best");
  EXPECT_EQ(trainer.state().epoch, 3) << "resumed after epoch 1 and ran epoch 2";
}

TEST(ModelCheckpoint, FitWithLastBeforeAnyCheckpointWarnsAndStartsFresh) {
  // As Lightning 2.6 (checkpoint_connector._parse_ckpt_path): ckpt_path="last" with nothing saved
  // yet is a warning, not an error, so a requeued job uses one command line from its first start.
  const std::string dir = temp_dir("mc_last_fresh");
  auto cb = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().dirpath(dir + "/ckpts").save_last(true));
  Scripted task(tiny_net(), {2, 1});
  Trainer trainer(quiet_options(dir).max_epochs(2), {cb});
  ::testing::internal::CaptureStderr();
  trainer.fit(task, loader(8, 4), loader(8, 8), "last");
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(err, HasSubstr("fit(ckpt_path=\"last\") is set, but there is no last checkpoint "
                             "available (looked in " +
                             dir + "/ckpts)"));
  EXPECT_THAT(err, HasSubstr("starts fresh"));
  EXPECT_EQ(trainer.ckpt_path(), "");
  EXPECT_EQ(trainer.state().epoch, 2);
  EXPECT_EQ(trainer.state().global_step, 4) << "trained from step 0";
  ASSERT_TRUE(fs::exists(dir + "/ckpts/last.ckpt"));

  // The same call again resumes from what the first run saved: nothing left to do.
  Scripted again(tiny_net(), {2, 1, 0});
  Trainer second(quiet_options(dir).max_epochs(3),
                 {std::make_shared<ModelCheckpoint>(
                     ModelCheckpointOptions().dirpath(dir + "/ckpts").save_last(true))});
  ::testing::internal::CaptureStderr();
  second.fit(again, loader(8, 4), loader(8, 8), "last");
  EXPECT_THAT(::testing::internal::GetCapturedStderr(), Not(HasSubstr("no last checkpoint")));
  EXPECT_EQ(second.ckpt_path(), dir + "/ckpts/last.ckpt");
  EXPECT_EQ(second.state().global_step, 6) << "resumed at step 4, one more epoch";

  // "best" with nothing known stays an error, as in Lightning.
  Scripted third(tiny_net(), {2});
  Trainer t3(quiet_options(dir + "/other").max_epochs(1));
  EXPECT_THAT(error_message([&] { t3.fit(third, loader(8, 4), loader(8, 8), "best"); }),
              HasSubstr("ckpt_path=\"best\": no such checkpoint is known"));
}

// ---------------------------------------------------------------------------------------------
// exceptions

TEST(ModelCheckpoint, SaveOnExceptionWritesACheckpointAndKeepsTheError) {
  struct Failing : Scripted {
    using Scripted::Scripted;
    at::Tensor training_step(const frugal::Batch& b, frugal::StepContext& ctx) override {
      if (ctx.trainer().state().global_step == 3) throw std::runtime_error("boom at step 3");
      return Scripted::training_step(b, ctx);
    }
  };
  const std::string dir = temp_dir("mc_exception");
  std::ostringstream out;
  auto cb = std::make_shared<ModelCheckpoint>(
      ModelCheckpointOptions().dirpath(dir).save_on_exception(true).save_top_k(0).out(&out));
  Failing task(tiny_net(), {1, 1, 1});
  Trainer trainer(quiet_options(dir).max_epochs(3), {cb});
  EXPECT_THAT(error_message([&] { trainer.fit(task, loader(8, 4), loader(8, 8)); }),
              HasSubstr("boom at step 3"));
  EXPECT_THAT(ckpt_files(dir), ElementsAre("on_exception.ckpt"));
  EXPECT_THAT(out.str(), HasSubstr("on_exception.ckpt"));
  auto net = tiny_net(7);
  frugal::load_weights(*net, dir + "/on_exception.ckpt");

  // A failing save is reported, never thrown from on_exception.
  std::ostringstream out2;
  ModelCheckpoint unsaved(ModelCheckpointOptions().dirpath(dir).save_on_exception(true).out(&out2));
  Trainer idle(quiet_options(dir));
  unsaved.on_exception(idle, task, std::runtime_error("x"));
  EXPECT_THAT(out2.str(), HasSubstr("could not save the on_exception checkpoint"));
}
