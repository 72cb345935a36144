// A user's program: wrap a model in frugal::Classifier and train it with frugal::Trainer.
// Prints "consumer ok <global_step> <version>" (tests/integration/test_consumer checks it).
//
//   consumer [default_root_dir]
#include <frugal/frugal.h>
#include <torch/torch.h>

#include <iostream>
#include <string>

int main(int argc, char** argv) {
  try {
    const std::string root = argc > 1 ? argv[1] : ".";
    torch::manual_seed(0);
    at::Tensor x = torch::randn({64, 4});
    at::Tensor y = (x.sum(1) > 0).to(torch::kLong);
    auto train = std::make_shared<frugal::TensorLoader>(
        x, y, frugal::TensorLoaderOptions(16).shuffle(true).seed(1));

    torch::nn::Linear net(4, 2);
    frugal::Classifier task(net, frugal::SGD(0.1));
    frugal::Trainer trainer(frugal::TrainerOptions()
                                .max_epochs(2)
                                .seed(0)
                                .accelerator("cpu")
                                .enable_progress_bar(false)
                                .logger(false)
                                .default_root_dir(root));
    trainer.fit(task, train);
    std::cout << "consumer ok " << trainer.state().global_step << " " << frugal::version()
              << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "consumer error: " << e.what() << std::endl;
    return 1;
  }
}
