// A training process for the data-parallel tests: trains a toy model with frugal's Trainer (data
// parallel when started by a launcher, single process otherwise) and writes what the tests
// compare. Every rank writes its own parameters and buffers (`--out` + ".rank<r>").
//
//   ddp_worker --model mlp --batch-size 8 --max-steps 6 --out /tmp/p        # one process
//   frugal-launch --nproc-per-node 2 -- ddp_worker --model mlp --batch-size 4 --out /tmp/p
#include <frugal/frugal.h>
#include <torch/torch.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <thread>

#include "test_support.h"

namespace {

/// BatchNorm in "eval-consistent" form: normalises with its running statistics (which a
/// training batch does not change), so the result does not depend on how a batch is split.
struct FrozenStatsNormImpl : torch::nn::Module {
  explicit FrozenStatsNormImpl(int64_t n) {
    weight = register_parameter("weight", torch::ones({n}));
    bias = register_parameter("bias", torch::zeros({n}));
    running_mean = register_buffer("running_mean", torch::randn({n}) * 0.1);
    running_var = register_buffer("running_var", torch::rand({n}) + 0.5);
  }
  at::Tensor forward(const at::Tensor& x) {
    return torch::nn::functional::batch_norm(
        x, running_mean, running_var,
        torch::nn::functional::BatchNormFuncOptions().weight(weight).bias(bias).training(false));
  }
  at::Tensor weight, bias, running_mean, running_var;
};
TORCH_MODULE(FrozenStatsNorm);

/// A linear layer that the forward never uses.
struct WithUnusedImpl : torch::nn::Module {
  WithUnusedImpl(int64_t in, int64_t classes) {
    used = register_module("used", torch::nn::Linear(in, classes));
    unused = register_module("unused", torch::nn::Linear(in, classes));
  }
  at::Tensor forward(const at::Tensor& x) { return used->forward(x); }
  torch::nn::Linear used{nullptr}, unused{nullptr};
};
TORCH_MODULE(WithUnused);

std::shared_ptr<torch::nn::Module> make_model(const std::string& name, int64_t features,
                                              int64_t classes, frugal::Classifier::Forward* fwd) {
  if (name == "unused") {
    WithUnused m(features, classes);
    *fwd = [m](const at::Tensor& x) mutable { return m->forward(x); };
    return m.ptr();
  }
  torch::nn::Sequential net;
  if (name == "mlp" || name == "frozen") {
    net = torch::nn::Sequential(torch::nn::Linear(features, 32), torch::nn::Tanh(),
                                torch::nn::Linear(32, 32), torch::nn::Tanh(),
                                torch::nn::Linear(32, classes));
    if (name == "frozen") {
      for (auto& p : net[0]->parameters()) p.set_requires_grad(false);
    }
  } else if (name == "bn-eval") {
    net = torch::nn::Sequential(torch::nn::Linear(features, 32), FrozenStatsNorm(32),
                                torch::nn::ReLU(), torch::nn::Linear(32, classes));
  } else if (name == "bn") {
    net = torch::nn::Sequential(torch::nn::Linear(features, 32), torch::nn::BatchNorm1d(32),
                                torch::nn::ReLU(), torch::nn::Linear(32, classes));
  } else {
    throw frugal::Error("--model must be mlp, frozen, bn, bn-eval or unused, got " + name);
  }
  *fwd = [net](const at::Tensor& x) mutable { return net->forward(x); };
  return net.ptr();
}

/// Counts correct predictions and samples exactly (sums over ranks); returns a NaN loss on rank
/// `nan_rank` at global step `nan_step`.
class CountingClassifier : public frugal::Classifier {
 public:
  using frugal::Classifier::Classifier;
  int64_t nan_rank = -1, nan_step = -1;
  at::Tensor training_step(const frugal::Batch& batch, frugal::StepContext& ctx) override {
    at::Tensor loss = frugal::Classifier::training_step(batch, ctx);
    const frugal::Trainer& trainer = ctx.trainer();
    if (trainer.global_rank() == nan_rank && trainer.state().global_step == nan_step) {
      return loss * std::numeric_limits<double>::quiet_NaN();
    }
    return loss;
  }
  void validation_step(const frugal::Batch& batch, frugal::StepContext& ctx) override {
    frugal::Classifier::validation_step(batch, ctx);
    at::Tensor correct = forward(batch.data).argmax(1).eq(batch.target).sum().to(at::kDouble);
    const auto sum =
        frugal::LogOptions().reduce(frugal::Reduce::kSum).batch_size(1).sync_dist(true);
    ctx.log("val/correct", correct, sum);
    ctx.log("val/count", static_cast<double>(batch.size()), sum);
  }
};

/// Ends this process abruptly (SIGKILL), makes it hang, requests a stop or sends itself SIGTERM,
/// at a given step on a given rank.
struct Saboteur : frugal::Callback {
  int64_t kill_rank = -1, kill_step = -1, hang_rank = -1, hang_step = -1;
  int64_t stop_rank = -1, stop_step = -1, signal_rank = -1, signal_step = -1;
  int64_t val_stop_rank = -1, val_stop_step = -1;
  int64_t backward_kill_rank = -1, backward_kill_step = -1, save_kill_rank = -1,
          save_kill_step = -1;
  bool backward_armed = false;  // read by the gradient hook main() registers
  const frugal::Trainer* trainer = nullptr;
  void on_fit_start(frugal::Trainer& t, frugal::Task&) override { trainer = &t; }
  void on_train_batch_start(frugal::Trainer& t, frugal::Task&, const frugal::Batch&,
                            int64_t) override {
    // The step this batch's optimizer step will complete is global_step + 1.
    backward_armed =
        t.global_rank() == backward_kill_rank && t.state().global_step + 1 >= backward_kill_step;
  }
  /// Called while a checkpoint is being written (every rank's callbacks give their state).
  frugal::StateDict state_dict() const override {
    if (trainer != nullptr && trainer->global_rank() == save_kill_rank &&
        trainer->state().global_step >= save_kill_step) {
      std::raise(SIGKILL);
    }
    return {};
  }
  void on_validation_end(frugal::Trainer& trainer, frugal::Task&) override {
    if (trainer.global_rank() == val_stop_rank && trainer.state().global_step >= val_stop_step &&
        !trainer.state().sanity_checking) {
      trainer.request_stop("asked by a validation");
    }
  }
  void on_train_batch_end(frugal::Trainer& trainer, frugal::Task&, const at::Tensor&,
                          const frugal::Batch&, int64_t) override {
    const int64_t step = trainer.state().global_step;
    if (trainer.global_rank() == stop_rank && step == stop_step) trainer.request_stop("asked");
    if (trainer.global_rank() == signal_rank && step == signal_step) std::raise(SIGTERM);
    if (trainer.global_rank() == kill_rank && step >= kill_step) std::raise(SIGKILL);
    if (trainer.global_rank() == hang_rank && step >= hang_step) {
      for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string mode = "fit", model = "mlp", out, save, resume, root = ".";
  int64_t samples = 96, features = 8, classes = 3, batch_size = 8, accumulate = 1, max_steps = 6;
  int64_t seed = 7, max_epochs = 1000;
  double lr = 0.1;
  Saboteur sab;
  CLI::App app{"frugal data-parallel test worker"};
  app.add_option("--mode", mode, "fit or eval");
  app.add_option("--model", model);
  app.add_option("--samples", samples);
  app.add_option("--features", features);
  app.add_option("--classes", classes);
  app.add_option("--batch-size", batch_size);
  app.add_option("--accumulate", accumulate);
  app.add_option("--max-steps", max_steps);
  app.add_option("--max-epochs", max_epochs);
  app.add_option("--seed", seed);
  app.add_option("--lr", lr);
  app.add_option("--root", root, "default_root_dir");
  app.add_option("--out", out, "writes parameters and buffers to <out>.rank<r>");
  app.add_option("--save", save, "save a checkpoint here after fit");
  app.add_option("--resume", resume, "resume from this checkpoint");
  app.add_option("--kill-rank", sab.kill_rank);
  app.add_option("--kill-step", sab.kill_step);
  app.add_option("--hang-rank", sab.hang_rank);
  app.add_option("--hang-step", sab.hang_step);
  app.add_option("--stop-rank", sab.stop_rank, "requests a stop on this rank at --stop-step");
  app.add_option("--stop-step", sab.stop_step);
  app.add_option("--signal-rank", sab.signal_rank, "SIGTERM to itself at --signal-step");
  app.add_option("--signal-step", sab.signal_step);
  app.add_option("--val-stop-rank", sab.val_stop_rank, "requests a stop in a validation");
  app.add_option("--val-stop-step", sab.val_stop_step, "... from this global step on");
  app.add_option("--backward-kill-rank", sab.backward_kill_rank,
                 "SIGKILL inside the backward pass (while the gradient all-reduce runs) of the "
                 "step that completes --backward-kill-step");
  app.add_option("--backward-kill-step", sab.backward_kill_step);
  app.add_option("--save-kill-rank", sab.save_kill_rank,
                 "SIGKILL while a checkpoint of --save-kill-step or later is written");
  app.add_option("--save-kill-step", sab.save_kill_step);
  int64_t ckpt_every = 0;
  app.add_option("--ckpt-every", ckpt_every,
                 "a checkpoint every n steps (all kept, and last.ckpt) in <root>/ckpts");
  int64_t val_every = 0;
  app.add_option("--val-every", val_every, "fit: validate every n batches (0: no validation)");
  int64_t nan_rank = -1, nan_step = -1;
  std::string nan_loss = "raise";
  app.add_option("--nan-rank", nan_rank, "a NaN loss on this rank at --nan-step");
  app.add_option("--nan-step", nan_step);
  app.add_option("--nan-loss", nan_loss, "raise or skip");
  std::string logger;
  app.add_option("--logger", logger,
                 "default: the Trainer's own loggers (CSV + TensorBoard under --root); csv, "
                 "tensorboard, both: frugal::make_file_loggers on every rank");
  int64_t log_every = 50;
  app.add_option("--log-every", log_every, "log_every_n_steps");
  CLI11_PARSE(app, argc, argv);
  try {
    torch::set_num_threads(1);
    const char* rank_env = std::getenv("RANK");
    const int64_t rank = rank_env ? std::atoll(rank_env) : 0;
    // For the fault tests: which process is which rank (rank 0's pid names the job's shared
    // memory segment, /dev/shm/frugal-<pid>-...).
    std::ofstream(root + "/pid.rank" + std::to_string(rank)) << ::getpid() << "\n";
    // Ranks start from different weights: fit and evaluation must broadcast rank 0's.
    torch::manual_seed(static_cast<uint64_t>(seed + 1000 * rank));
    frugal::Classifier::Forward fwd;
    auto net = make_model(model, features, classes, &fwd);
    CountingClassifier task(net, fwd, frugal::SGD(lr, /*momentum=*/0.9));
    task.nan_rank = nan_rank;
    task.nan_step = nan_step;
    auto data = frugal::testing::make_toy_data(samples, features, classes, /*seed=*/3);
    frugal::TrainerOptions options = frugal::testing::quiet_options(root);
    options
        .num_threads(1)  // as set above: one thread per rank
        .max_steps(max_steps)
        .max_epochs(max_epochs)
        .accumulate_grad_batches(accumulate)
        .num_sanity_val_steps(0)
        .nan_loss(nan_loss == "skip" ? frugal::NanLossPolicy::kSkip : frugal::NanLossPolicy::kRaise)
        .accelerator("cpu");
    if (val_every > 0) options.val_check_interval(val_every).check_val_every_n_epoch(0);
    options.log_every_n_steps(log_every).logger(logger == "default");
    std::vector<std::shared_ptr<frugal::Logger>> loggers;
    if (!logger.empty() && logger != "default") loggers = frugal::make_file_loggers(logger, root);
    auto saboteur = std::make_shared<Saboteur>(sab);
    for (auto& p : net->parameters()) {
      // The first layer's weight: its gradient comes last, while the later layers' gradient
      // buckets are being all-reduced.
      if (!p.requires_grad()) continue;
      p.register_hook([saboteur](const at::Tensor& g) {
        if (saboteur->backward_armed) std::raise(SIGKILL);
        return g;
      });
      break;
    }
    std::vector<std::shared_ptr<frugal::Callback>> callbacks = {saboteur};
    if (ckpt_every > 0) {
      callbacks.push_back(
          std::make_shared<frugal::ModelCheckpoint>(frugal::ModelCheckpointOptions()
                                                        .dirpath(root + "/ckpts")
                                                        .every_n_train_steps(ckpt_every)
                                                        .save_top_k(-1)
                                                        .save_last(true)));
    }
    frugal::Trainer trainer(options, callbacks, loggers);
    std::map<std::string, double> results;
    if (mode == "fit") {
      auto train = std::make_shared<frugal::TensorLoader>(
          data.x, data.y, frugal::TensorLoaderOptions(batch_size).shuffle(true).seed(11));
      std::shared_ptr<frugal::TensorLoader> val;
      if (val_every > 0) {
        val = std::make_shared<frugal::TensorLoader>(
            data.x, data.y, frugal::TensorLoaderOptions(batch_size).pad_shards(false));
      }
      trainer.fit(task, train, val, resume);
      if (!save.empty()) trainer.save_checkpoint(save);
    } else {
      auto val = std::make_shared<frugal::TensorLoader>(
          data.x, data.y, frugal::TensorLoaderOptions(batch_size).pad_shards(false));
      results = trainer.validate(task, val);
    }
    if (!out.empty()) {
      std::vector<at::Tensor> state;
      for (const auto& p : net->parameters()) state.push_back(p.detach().clone());
      for (const auto& b : net->buffers()) state.push_back(b.detach().clone());
      torch::save(state, out + ".rank" + std::to_string(trainer.global_rank()));
      std::ofstream m(out + ".rank" + std::to_string(trainer.global_rank()) + ".metrics");
      m.precision(17);
      for (const auto& [k, v] : results) m << k << " " << v << "\n";
      m << "global_step " << trainer.state().global_step << "\n";
      m << "skipped_steps " << trainer.state().skipped_steps << "\n";
      m << "preempted "
        << (trainer.state().stop_reason.find("saved checkpoint") != std::string::npos) << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
