// Writes the seeds that frugal itself makes (fuzz/make_seeds.py makes the others):
//   checkpoint/  full and weights-only checkpoints of fuzz/tiny_model.h, with and without the
//                checksum, and a few broken ones
//   tfrecords/   a TensorBoard event file from TensorBoardLogger, and records cut short
// Usage: fuzz_make_seeds <corpus folder>   (scripts/fuzz --seeds runs it)
#include <frugal/frugal.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>

#include "frugal/loggers/tensorboard.h"
#include "tiny_model.h"

namespace fs = std::filesystem;

namespace {

std::string read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// Saves a full and a weights-only checkpoint at the last training batch.
struct SaveAtEnd : frugal::Callback {
  fs::path dir;
  explicit SaveAtEnd(fs::path d) : dir(std::move(d)) {}
  void on_train_end(frugal::Trainer& trainer, frugal::Task&) override {
    trainer.save_checkpoint((dir / "full.ckpt").string());
    trainer.save_checkpoint((dir / "weights.ckpt").string(), /*weights_only=*/true);
  }
};

void checkpoints(const fs::path& dir) {
  fs::create_directories(dir);
  torch::nn::Sequential net = frugal::fuzz::tiny_model();
  frugal::Classifier task(net, frugal::AdamW(1e-2));
  torch::manual_seed(1);
  auto loader = std::make_shared<frugal::TensorLoader>(
      torch::randn({8, 4}), torch::randint(0, 2, {8}), frugal::TensorLoaderOptions(4));
  const fs::path logs = fs::temp_directory_path() / "frugal-fuzz-seeds-logs";
  frugal::Trainer trainer(frugal::TrainerOptions()
                              .max_epochs(1)
                              .enable_progress_bar(false)
                              .logger(false)
                              .num_sanity_val_steps(0)
                              .default_root_dir(logs.string()),
                          {std::make_shared<SaveAtEnd>(dir)});
  trainer.fit(task, loader);
  fs::remove_all(logs);
  // Without the checksum comment (as written before frugal recorded one): the zip comment length
  // set back to 0 and the comment cut off.
  for (const char* name : {"full", "weights"}) {
    std::string bytes = read(dir / (std::string(name) + ".ckpt"));
    const size_t comment = 14 + 64;
    bytes.resize(bytes.size() - comment);
    bytes[bytes.size() - 2] = bytes[bytes.size() - 1] = '\0';
    write(dir / (std::string(name) + "-unchecked.ckpt"), bytes);
  }
  const std::string full = read(dir / "full.ckpt");
  write(dir / "truncated.ckpt", full.substr(0, full.size() / 2));
  std::string flipped = full;
  flipped[flipped.size() / 3] ^= 0x40;
  write(dir / "flipped.ckpt", flipped);
}

void tfrecords(const fs::path& dir) {
  fs::create_directories(dir);
  const fs::path logs = fs::temp_directory_path() / "frugal-fuzz-seeds-tb";
  std::string event_file;
  {
    frugal::TensorBoardLogger logger(
        frugal::TensorBoardLoggerOptions(logs.string()).name("seed").version(0));
    logger.log_hyperparams({{"lr", "0.01"}});
    logger.log_metrics({{"train/loss", 0.5}, {"val/acc", 0.75}}, 1, 0);
    logger.log_text("note", "seed", 1);
    logger.finalize("success");
    event_file = logger.event_file();
  }
  const std::string events = read(event_file);
  fs::remove_all(logs);
  write(dir / "events.tfevents", events);
  write(dir / "cut.tfevents", events.substr(0, events.size() - 5));
  write(dir / "one-record.tfevents", frugal::detail::tfrecord("x"));
  write(dir / "empty-record.tfevents", frugal::detail::tfrecord(""));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_make_seeds <corpus folder>\n";
    return 2;
  }
  const fs::path root = argv[1];
  checkpoints(root / "checkpoint");
  tfrecords(root / "tfrecords");
  std::cout << "seeds written under " << root.string() << "\n";
  return 0;
}
