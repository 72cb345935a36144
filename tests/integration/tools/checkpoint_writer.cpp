// Test tool: trains a large linear model and saves a full checkpoint to one path after every
// optimizer step, with every weight set to the step number first; a parent process kills it
// while it writes (tests/integration/test_kill_during_save.cpp).
#include <frugal/frugal.h>
#include <torch/torch.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: checkpoint_writer PATH FEATURES\n";
    return 2;
  }
  const std::string path = argv[1];
  const int64_t features = std::stoll(argv[2]);
  struct SaveEveryStep : frugal::Callback {
    std::string path;
    torch::nn::Linear net{nullptr};
    void on_train_batch_end(frugal::Trainer& t, frugal::Task&, const at::Tensor&,
                            const frugal::Batch&, int64_t) override {
      {
        torch::NoGradGuard g;
        net->weight.fill_(static_cast<double>(t.state().global_step));
      }
      t.save_checkpoint(path);
      std::cout << "saved " << t.state().global_step << std::endl;
    }
  };
  torch::nn::Linear net(features, features);
  frugal::Classifier task(net, frugal::SGD(1e-9));
  auto save = std::make_shared<SaveEveryStep>();
  save->path = path;
  save->net = net;
  auto x = torch::randn({4, features});
  auto y = torch::zeros({4}, torch::kLong);
  frugal::Trainer trainer(frugal::TrainerOptions()
                              .max_epochs(100000)
                              .enable_progress_bar(false)
                              .logger(false)
                              .accelerator("cpu")
                              .num_sanity_val_steps(0),
                          {save});
  trainer.fit(task, std::make_shared<frugal::TensorLoader>(x, y, frugal::TensorLoaderOptions(4)));
  return 0;
}
