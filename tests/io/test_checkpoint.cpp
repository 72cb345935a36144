// Checkpoints: exact resume (end of epoch, mid-epoch, mid accumulation window), clear errors for
// bad files, weights-only loading, the model left untouched by a failed load; checksums (every
// damaged copy refused), a failed save (disk full) and unwritable folders.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "disk_full.h"
#include "test_support.h"

namespace {

using frugal::Trainer;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

/// Saves a full checkpoint when the global step reaches `at` (in on_train_batch_end, as
/// ModelCheckpoint does), and optionally mid-window at a given batch.
struct SaveAt : frugal::Callback {
  int64_t at;
  std::string path;
  int64_t at_batch;
  SaveAt(int64_t step, std::string p, int64_t batch = -1)
      : at(step), path(std::move(p)), at_batch(batch) {}
  void on_train_batch_end(Trainer& t, frugal::Task&, const at::Tensor&, const frugal::Batch&,
                          int64_t) override {
    const bool by_step = at_batch < 0 && t.state().global_step == at && !saved;
    const bool by_batch = at_batch >= 0 && t.state().epoch_batches_done == at_batch && !saved;
    if (by_step || by_batch) {
      t.save_checkpoint(path);
      saved = true;
    }
  }
  bool saved = false;
};

struct Model {
  torch::nn::Sequential net;
  std::unique_ptr<frugal::Classifier> task;
};

Model make_run() {
  torch::manual_seed(11);
  Model r{torch::nn::Sequential(torch::nn::Linear(8, 32), torch::nn::ReLU(),
                                torch::nn::Dropout(0.2), torch::nn::Linear(32, 3)),
          nullptr};
  r.task = std::make_unique<frugal::Classifier>(
      r.net, frugal::with_scheduler(frugal::AdamW(1e-2), [](torch::optim::Optimizer& o) {
        return std::make_shared<frugal::CosineAnnealingLR>(o, 4);
      }));
  return r;
}

std::shared_ptr<frugal::TensorLoader> train_data() {
  static auto d = frugal::testing::make_toy_data(84);  // 11 batches of 8 (last one short)
  return std::make_shared<frugal::TensorLoader>(
      d.x, d.y, frugal::TensorLoaderOptions(8).shuffle(true).seed(5));
}

frugal::TrainerOptions options(int64_t k) {
  return frugal::testing::quiet_options().max_epochs(3).seed(1).accumulate_grad_batches(k);
}

/// Records val/loss after every real validation (the history a resumed run must reproduce).
struct ValRecorder : frugal::Callback {
  std::vector<double>* out;
  explicit ValRecorder(std::vector<double>* o) : out(o) {}
  void on_validation_end(Trainer& t, frugal::Task&) override {
    if (!t.state().sanity_checking) out->push_back(t.callback_metrics().at("val/loss"));
  }
};

/// Final parameters (SHA-256) and the val/loss of every validation, in order.
using Outcome = std::pair<std::string, std::vector<double>>;

Outcome reference(int64_t k) {
  Model r = make_run();
  std::vector<double> vals;
  Trainer t(options(k), {std::make_shared<ValRecorder>(&vals)});
  t.fit(*r.task, train_data(), train_data());
  return {frugal::params_sha256(*r.net), vals};
}

/// Trains until a checkpoint is written at `save` (then stops: a process killed after the save),
/// and resumes from it in a fresh model, trainer and data source.
Outcome interrupted(int64_t k, std::shared_ptr<SaveAt> save) {
  std::vector<double> vals;  // the killed run's validations, then the resumed run's
  {
    Model r = make_run();
    struct StopAfterSave : frugal::Callback {
      std::shared_ptr<SaveAt> s;
      void on_train_batch_end(Trainer& t, frugal::Task&, const at::Tensor&, const frugal::Batch&,
                              int64_t) override {
        if (s->saved) throw std::runtime_error("killed");
      }
    };
    auto stop = std::make_shared<StopAfterSave>();
    stop->s = save;
    Trainer killed(options(k), {save, stop, std::make_shared<ValRecorder>(&vals)});
    EXPECT_THROW(killed.fit(*r.task, train_data(), train_data()), std::runtime_error);
  }
  torch::manual_seed(999);  // the resumed process starts from another RNG state
  Model r = make_run();
  Trainer t(options(k), {std::make_shared<ValRecorder>(&vals)});
  t.fit(*r.task, train_data(), train_data(), save->path);
  EXPECT_EQ(t.state().epoch, 3);
  return {frugal::params_sha256(*r.net), vals};
}

TEST(Checkpoint, ResumeAtEpochEndIsExact) {
  // Saved in on_train_batch_end of the epoch's last batch: before that epoch's validation, which
  // the resumed run must still do (the validation history is compared too).
  const std::string dir = frugal::testing::temp_dir("ckpt_epoch");
  EXPECT_EQ(interrupted(1, std::make_shared<SaveAt>(11, dir + "/a.ckpt")), reference(1));
}

TEST(Checkpoint, ResumeMidEpochIsExact) {
  const std::string dir = frugal::testing::temp_dir("ckpt_mid");
  EXPECT_EQ(interrupted(1, std::make_shared<SaveAt>(15, dir + "/a.ckpt")), reference(1));
}

TEST(Checkpoint, ResumeMidEpochWithAccumulationIsExact) {
  const std::string dir = frugal::testing::temp_dir("ckpt_acc");
  // k = 3: windows of 3, 3, 3, 2 per epoch; step 6 is in the second epoch.
  EXPECT_EQ(interrupted(3, std::make_shared<SaveAt>(6, dir + "/a.ckpt")), reference(3));
}

TEST(Checkpoint, ResumeFromInsideAnAccumulationWindowIsExact) {
  const std::string dir = frugal::testing::temp_dir("ckpt_window");
  // Saved after batch 5 of epoch 0 with k = 3: one micro-batch of the window is accumulated.
  EXPECT_EQ(interrupted(3, std::make_shared<SaveAt>(-1, dir + "/a.ckpt", 4)), reference(3));
}

std::string save_one(const std::string& path, bool weights_only = false) {
  Model r = make_run();
  struct Save : frugal::Callback {
    std::string path;
    bool weights_only;
    void on_train_end(Trainer& t, frugal::Task&) override { t.save_checkpoint(path, weights_only); }
  };
  auto s = std::make_shared<Save>();
  s->path = path;
  s->weights_only = weights_only;
  Trainer t(frugal::testing::quiet_options().max_epochs(1), {s});
  t.fit(*r.task, train_data());
  return frugal::params_sha256(*r.net);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const frugal::Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Checkpoint, LoadWeightsRestoresExactlyAndWeightsOnlyCannotResume) {
  const std::string dir = frugal::testing::temp_dir("ckpt_weights");
  const std::string sha = save_one(dir + "/w.ckpt", /*weights_only=*/true);
  Model r = make_run();
  frugal::load_weights(*r.net, dir + "/w.ckpt");
  EXPECT_EQ(frugal::params_sha256(*r.net), sha);
  Trainer t(frugal::testing::quiet_options().max_epochs(2));
  EXPECT_THAT(error_of([&] { t.fit(*r.task, train_data(), nullptr, dir + "/w.ckpt"); }),
              HasSubstr("holds weights only"));
}

TEST(Checkpoint, BadFilesGiveClearErrorsAndLeaveTheModelUntouched) {
  const std::string dir = frugal::testing::temp_dir("ckpt_bad");
  save_one(dir + "/good.ckpt");
  Model r = make_run();
  const std::string before = frugal::params_sha256(*r.net);

  EXPECT_THAT(error_of([&] { frugal::load_weights(*r.net, dir + "/missing.ckpt"); }),
              HasSubstr("checkpoint file not found: " + dir + "/missing.ckpt"));

  const auto size = fs::file_size(dir + "/good.ckpt");
  fs::copy_file(dir + "/good.ckpt", dir + "/truncated.ckpt");
  fs::resize_file(dir + "/truncated.ckpt", size / 2);
  EXPECT_THAT(error_of([&] { frugal::load_weights(*r.net, dir + "/truncated.ckpt"); }),
              HasSubstr("truncated, corrupt or not a LibTorch archive"));

  {
    std::ofstream out(dir + "/garbage.ckpt", std::ios::binary);
    out << std::string(4096, 'x');
  }
  EXPECT_THAT(error_of([&] { frugal::load_weights(*r.net, dir + "/garbage.ckpt"); }),
              HasSubstr("truncated, corrupt or not a LibTorch archive"));

  torch::save(torch::ones({3}), dir + "/foreign.pt");
  EXPECT_THAT(error_of([&] { frugal::load_weights(*r.net, dir + "/foreign.pt"); }),
              HasSubstr("is not a frugal checkpoint"));

  torch::nn::Sequential other(torch::nn::Linear(8, 16), torch::nn::ReLU(), torch::nn::Dropout(0.2),
                              torch::nn::Linear(16, 3));
  const std::string other_before = frugal::params_sha256(*other);
  EXPECT_THAT(error_of([&] { frugal::load_weights(*other, dir + "/good.ckpt"); }),
              HasSubstr("parameter \"0.weight\" has shape [32, 8] in the file but [16, 8] in "
                        "the model"));
  EXPECT_EQ(frugal::params_sha256(*other), other_before);

  torch::nn::Sequential fewer(torch::nn::Linear(8, 32), torch::nn::ReLU(), torch::nn::Dropout(0.2));
  EXPECT_THAT(error_of([&] { frugal::load_weights(*fewer, dir + "/good.ckpt"); }),
              HasSubstr("has \"3\", which the model does not have"));
  torch::nn::Sequential more(torch::nn::Linear(8, 32), torch::nn::ReLU(), torch::nn::Dropout(0.2),
                             torch::nn::Linear(32, 3), torch::nn::Linear(3, 3));
  EXPECT_THAT(error_of([&] { frugal::load_weights(*more, dir + "/good.ckpt"); }),
              HasSubstr("has no module \"4\""));

  // A resume whose optimizer does not fit leaves the model as it was.
  Model s = make_run();
  frugal::Classifier sgd(s.net, frugal::SGD(0.1));
  const std::string s_before = frugal::params_sha256(*s.net);
  Trainer t(frugal::testing::quiet_options().max_epochs(2));
  EXPECT_THAT(error_of([&] { t.fit(sgd, train_data(), nullptr, dir + "/good.ckpt"); }),
              HasSubstr("LR scheduler state"));
  EXPECT_EQ(frugal::params_sha256(*s.net), s_before);
  EXPECT_EQ(frugal::params_sha256(*r.net), before);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Note [Checkpoint checksums] (src/io/checksum.cpp): before checksums, 73 of 120 damaged copies
// of a real checkpoint loaded without a word, with different weights.
TEST(Checkpoint, EveryDamagedCopyIsRefusedOrLoadsTheSameWeights) {
  const std::string dir = frugal::testing::temp_dir("ckpt_damaged");
  const std::string good = dir + "/good.ckpt";
  const std::string sha = save_one(good);
  const std::string bytes = read_bytes(good);
  std::mt19937 rng(2026);
  int refused = 0, identical = 0, different = 0;
  std::string first_error;
  for (int copy = 0; copy < 120; ++copy) {
    std::string damaged = bytes;
    if (copy % 6 == 5) {  // truncated
      damaged.resize(std::uniform_int_distribution<size_t>(0, bytes.size() - 1)(rng));
    } else {  // 1 to 4 bytes changed
      const int n = std::uniform_int_distribution<int>(1, 4)(rng);
      for (int i = 0; i < n; ++i) {
        const size_t at = std::uniform_int_distribution<size_t>(0, bytes.size() - 1)(rng);
        damaged[at] =
            static_cast<char>(damaged[at] ^ std::uniform_int_distribution<int>(1, 255)(rng));
      }
    }
    const std::string path = dir + "/copy" + std::to_string(copy) + ".ckpt";
    write_bytes(path, damaged);
    Model r = make_run();
    ::testing::internal::CaptureStderr();
    const std::string error = error_of([&] { frugal::load_weights(*r.net, path); });
    ::testing::internal::GetCapturedStderr();
    if (error != "no error") {
      ++refused;
      if (first_error.empty() && copy % 6 != 5) first_error = error;
      EXPECT_THAT(error, HasSubstr(path)) << "the error names the file";
    } else if (frugal::params_sha256(*r.net) == sha) {
      ++identical;
    } else {
      ++different;
    }
  }
  std::printf("120 damaged copies: %d refused, %d loaded the same weights, %d different\n", refused,
              identical, different);
  EXPECT_EQ(different, 0);
  EXPECT_GE(refused, 110) << "only a change in the checksum's own marker can go unnoticed";
  EXPECT_THAT(first_error, HasSubstr("is corrupt: its contents do not match the SHA-256"));
}

TEST(Checkpoint, ResumeRefusesADamagedCheckpointBeforeChangingAnything) {
  const std::string dir = frugal::testing::temp_dir("ckpt_damaged_resume");
  save_one(dir + "/good.ckpt");
  std::string bytes = read_bytes(dir + "/good.ckpt");
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x10);
  write_bytes(dir + "/bad.ckpt", bytes);
  Model r = make_run();
  const std::string before = frugal::params_sha256(*r.net);
  Trainer t(frugal::testing::quiet_options().max_epochs(2));
  EXPECT_THAT(error_of([&] { t.fit(*r.task, train_data(), nullptr, dir + "/bad.ckpt"); }),
              HasSubstr("checkpoint " + dir + "/bad.ckpt is corrupt"));
  EXPECT_EQ(frugal::params_sha256(*r.net), before);
  // verify_checkpoints(false) skips the check (the flipped byte then goes unnoticed here).
  Model q = make_run();
  Trainer unchecked(frugal::testing::quiet_options().max_epochs(2).verify_checkpoints(false));
  EXPECT_EQ(error_of([&] { frugal::load_weights(*q.net, dir + "/bad.ckpt", false); }), "no error");
}

TEST(Checkpoint, AFileWithoutChecksumLoadsWithAWarning) {
  const std::string dir = frugal::testing::temp_dir("ckpt_unchecked");
  const std::string sha = save_one(dir + "/good.ckpt");
  std::string bytes = read_bytes(dir + "/good.ckpt");
  // As frugal wrote checkpoints before checksums: the zip without its comment.
  const size_t comment = static_cast<unsigned char>(bytes[bytes.size() - 80]);
  ASSERT_EQ(comment, 78u);
  bytes.resize(bytes.size() - 78);
  bytes[bytes.size() - 2] = 0;
  write_bytes(dir + "/old.ckpt", bytes);
  Model r = make_run();
  ::testing::internal::CaptureStderr();
  frugal::load_weights(*r.net, dir + "/old.ckpt");
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(frugal::params_sha256(*r.net), sha);
  EXPECT_THAT(err, HasSubstr("checkpoint " + dir + "/old.ckpt has no checksum"));
}

TEST(Checkpoint, ACheckedFileIsAnOrdinaryZipArchiveForPython) {
  if (std::system("/usr/bin/python3 -c 'import zipfile' 2>/dev/null") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 is not available";
  }
  const std::string dir = frugal::testing::temp_dir("ckpt_zip");
  save_one(dir + "/good.ckpt");
  // Python's zipfile checks every record's CRC-32 and reads the comment.
  const auto run = frugal::testing::run_program(
      "/usr/bin/python3",
      "-c " +
          frugal::testing::shell_quote("import zipfile,sys\n"
                                       "z = zipfile.ZipFile(sys.argv[1])\n"
                                       "assert z.testzip() is None\n"
                                       "print(z.comment.decode()[:14], len(z.comment))\n") +
          " " + frugal::testing::shell_quote(dir + "/good.ckpt"),
      dir, "zipfile");
  ASSERT_EQ(run.exit_code, 0) << run.describe();
  EXPECT_EQ(run.out, "frugal-sha256: 78\n");
}

// Disk full while a checkpoint is written: RLIMIT_FSIZE makes write() fail part-way (EFBIG), as a
// full disk does (ENOSPC), without mounting anything.
TEST(Checkpoint, AFailedSaveKeepsThePreviousFileAndTheNextSaveWorks) {
  const std::string dir = frugal::testing::temp_dir("ckpt_disk_full");
  const std::string path = dir + "/run.ckpt";
  struct SaveTwice : frugal::Callback {
    std::string path, error, kept_bytes, params_before, params_after;
    bool later_save_loads = false;
    void on_train_batch_end(Trainer& t, frugal::Task& task, const at::Tensor&, const frugal::Batch&,
                            int64_t) override {
      if (t.state().global_step == 2) t.save_checkpoint(path);
      if (t.state().global_step != 4) return;
      kept_bytes = read_bytes(path);
      params_before = frugal::params_sha256(task.module());
      frugal::testing::with_disk_full_after(
          kept_bytes.size() / 2, [&] { error = error_of([&] { t.save_checkpoint(path); }); });
      params_after = frugal::params_sha256(task.module());
      t.save_checkpoint(path);
    }
  };
  auto cb = std::make_shared<SaveTwice>();
  cb->path = path;
  Model r = make_run();
  Trainer t(frugal::testing::quiet_options().max_epochs(1), {cb});
  t.fit(*r.task, train_data());
  EXPECT_THAT(cb->error, HasSubstr("cannot write '" + path + "'"));
  EXPECT_THAT(cb->error, HasSubstr("File too large"));
  EXPECT_EQ(cb->params_after, cb->params_before) << "a failed save changes no training state";
  int leftovers = 0;
  for (const auto& entry : fs::directory_iterator(dir)) leftovers += entry.path() != path;
  EXPECT_EQ(leftovers, 0) << "no temporary file is left behind";
  // The save after the failure replaced the file whole, and it resumes.
  Model q = make_run();
  Trainer resumed(frugal::testing::quiet_options().max_epochs(1));
  EXPECT_EQ(error_of([&] { resumed.fit(*q.task, train_data(), nullptr, path); }), "no error");
  // The file kept through the failure was the complete, checked one from step 2.
  write_bytes(dir + "/kept.ckpt", cb->kept_bytes);
  Model k = make_run();
  EXPECT_EQ(error_of([&] { frugal::load_weights(*k.net, dir + "/kept.ckpt"); }), "no error");
}

TEST(Checkpoint, UnwritableFoldersAreRefusedAtFitStart) {
  const std::string dir = frugal::testing::temp_dir("ckpt_unwritable");
  { std::ofstream(dir + "/a_file") << "x"; }
  auto fit_with = [&](std::shared_ptr<frugal::Callback> cb, frugal::TrainerOptions o) {
    Model r = make_run();
    Trainer t(o.max_epochs(1), {std::move(cb)});
    return error_of([&] { t.fit(*r.task, train_data()); });
  };
  // A file where the folder should be.
  EXPECT_THAT(fit_with(std::make_shared<frugal::ModelCheckpoint>(
                           frugal::ModelCheckpointOptions().dirpath(dir + "/a_file/ckpts")),
                       frugal::testing::quiet_options()),
              HasSubstr("ModelCheckpoint: cannot use the folder '" + dir + "/a_file/ckpts'"));
  // A folder no file can be created in, even by root: /proc/self.
  EXPECT_THAT(fit_with(std::make_shared<frugal::ModelCheckpoint>(
                           frugal::ModelCheckpointOptions().dirpath("/proc/self/ckpts")),
                       frugal::testing::quiet_options()),
              HasSubstr("ModelCheckpoint: cannot write to the folder '/proc/self/ckpts' (in "
                        "'/proc/self')"));
  EXPECT_THAT(error_of([&] {
                frugal::CSVLogger logger(frugal::CSVLoggerOptions().save_dir("/proc/self"));
              }),
              HasSubstr("CSVLogger: cannot create the folder '/proc/self/"));
  // Nothing was trained: the errors came before the first step.
  EXPECT_FALSE(fs::exists(dir + "/a_file/ckpts"));
}

TEST(Checkpoint, GpuCheckpointLayoutHoldsCpuTensors) {
  const std::string dir = frugal::testing::temp_dir("ckpt_cpu");
  save_one(dir + "/c.ckpt");
  torch::serialize::InputArchive root;
  root.load_from(dir + "/c.ckpt");
  torch::serialize::InputArchive model;
  ASSERT_TRUE(root.try_read("model", model));
  torch::serialize::InputArchive first;
  ASSERT_TRUE(model.try_read("0", first));
  at::Tensor w;
  ASSERT_TRUE(first.try_read("weight", w));
  EXPECT_TRUE(w.device().is_cpu());
  EXPECT_EQ(w.sizes(), (std::vector<int64_t>{32, 8}));
}

TEST(Checkpoint, SaveOutsideFitIsAClearError) {
  Trainer t(frugal::testing::quiet_options());
  EXPECT_THAT(error_of([&] { t.save_checkpoint("/tmp/x.ckpt"); }), HasSubstr("no fit has started"));
}

}  // namespace
