// Fine-tuning a zoo model from saved weights, on Fashion-MNIST (no downloads here, so the
// "pre-trained" weights are made honestly first): pre-train on classes 0-4, save the weights as
// .safetensors, then fine-tune on classes 5-9 with the backbone frozen (new head), and compare
// with the same model trained from scratch on 5-9 for the same epochs: test accuracy and time.
//
//   build/examples/finetune/finetune --model mobilenet_v3_small --epochs 2 --per-class 1000
//
// Weights saved by Python (torch.save(model.state_dict()) or safetensors) load the same way:
// --weights file.pt skips the pre-training. On a folder of images instead of Fashion-MNIST:
//
//   build/examples/finetune/finetune --model mobilenet_v3_small --weights mnv3s.pt \
//       --image-folder DIR --image-size 96      # DIR/train and DIR/val of class sub-folders
//
// where mnv3s.pt is torchvision's model as Python saves it (1000 classes, 3 channels): the head
// is replaced for DIR's classes, the backbone frozen, and the same model trained from scratch
// for comparison.
#include <frugal/frugal.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "../common/image_data.h"

namespace {

struct Args {
  std::string data_dir = frugal::datasets::FashionMnist::kDefaultDir;
  std::string model = "mobilenet_v3_small";
  int64_t epochs = 2;
  int64_t per_class = 1000;  // training images per class (of 6000)
  int64_t batch_size = 64;
  double lr = 1e-3;
  int64_t seed = 42;
  int64_t num_threads = 0;
  std::string weights;  // pre-trained weights (skip the pre-training)
  std::string out_dir = "finetune_out";
  std::string metrics_json;
  std::string image_folder;  // DIR/train and DIR/val instead of Fashion-MNIST
  int64_t image_size = 64;
};

// The images of classes [first, first + 5), at most `per_class` each, labels shifted to 0..4.
std::pair<at::Tensor, at::Tensor> subset(const frugal::datasets::Split& split, int64_t first,
                                         int64_t per_class) {
  std::vector<at::Tensor> xs, ys;
  for (int64_t c = first; c < first + 5; ++c) {
    auto idx = (split.labels == c).nonzero().view(-1);
    if (per_class > 0 && idx.numel() > per_class) idx = idx.slice(0, 0, per_class);
    xs.push_back(split.images.index_select(0, idx));
    ys.push_back(torch::full({idx.numel()}, c - first, torch::kLong));
  }
  return {torch::cat(xs), torch::cat(ys)};
}

std::vector<std::string> backbone_of(frugal::models::ZooModel& m) {
  std::vector<std::string> out;
  for (const auto& c : m.named_children())
    if (c.key() != m.head_prefix() && !c.value()->parameters().empty()) out.push_back(c.key());
  return out;
}

struct RunResult {
  double seconds = 0, test_acc = 0;
  int64_t trainable = 0;
};

RunResult train(std::shared_ptr<frugal::models::ZooModel> net, const Args& a,
                const std::pair<at::Tensor, at::Tensor>& tr,
                const std::pair<at::Tensor, at::Tensor>& te, const std::string& dir) {
  RunResult r;
  for (const auto& p : net->parameters())
    if (p.requires_grad()) r.trainable += p.numel();
  frugal::Classifier task(
      std::static_pointer_cast<torch::nn::Module>(net),
      [net](at::Tensor x) { return net->forward(x); }, frugal::AdamW(a.lr, 1e-4));
  frugal::Trainer trainer(frugal::TrainerOptions()
                              .max_epochs(a.epochs)
                              .enable_progress_bar(false)
                              .logger(false)
                              .accelerator("cpu")
                              .num_sanity_val_steps(0)
                              .default_root_dir(dir));
  auto loader = std::make_shared<frugal::TensorLoader>(
      tr.first, tr.second,
      frugal::TensorLoaderOptions(a.batch_size).shuffle(true).seed(static_cast<uint64_t>(a.seed)));
  const auto t0 = std::chrono::steady_clock::now();
  trainer.fit(task, loader);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto test = trainer.test(task, std::make_shared<frugal::TensorLoader>(
                                     te.first, te.second, frugal::TensorLoaderOptions(256)));
  r.test_acc = test.at("test/acc");
  return r;
}

// --image-folder: fine-tune from Python's weights (1000 classes, 3 channels) with a new head for
// the folder's classes and the backbone frozen, against the same model from scratch.
int finetune_on_folder(const Args& a) {
  FRUGAL_CHECK(!a.weights.empty(),
               "--image-folder needs --weights: the model's state dict as Python saves it "
               "(torch.save(model.state_dict()) or safetensors), 1000 classes, 3 channels");
  int64_t classes = 0, val_classes = 0;
  const auto train_set =
      frugal_examples::load_image_folder(a.image_folder + "/train", a.image_size, 0, &classes);
  const auto val_set =
      frugal_examples::load_image_folder(a.image_folder + "/val", a.image_size, 0, &val_classes);
  FRUGAL_CHECK(classes == val_classes, "--image-folder ", a.image_folder, ": train/ has ", classes,
               " classes, val/ has ", val_classes);
  torch::manual_seed(static_cast<uint64_t>(a.seed) + 1);
  auto ft = frugal::models::create_model(a.model, 1000, 3);
  frugal::load_state_dict(*ft, a.weights);  // strict: torchvision's names and shapes
  ft->reset_classifier(classes);
  frugal::freeze(*ft, backbone_of(*ft));
  const auto rf = train(ft, a, train_set, val_set, a.out_dir + "/finetune");
  torch::manual_seed(static_cast<uint64_t>(a.seed) + 1);
  auto scratch = frugal::models::create_model(a.model, classes, 3);
  const auto rs = train(scratch, a, train_set, val_set, a.out_dir + "/scratch");
  std::cout << a.image_folder << ": " << classes << " classes, " << train_set.first.size(0)
            << " training images, " << a.epochs << " epochs:\n"
            << "  fine-tuned (backbone frozen): val acc " << rf.test_acc << ", " << rf.seconds
            << " s, " << rf.trainable << " trainable parameters\n"
            << "  from scratch:                 val acc " << rs.test_acc << ", " << rs.seconds
            << " s, " << rs.trainable << " trainable parameters\n";
  if (!a.metrics_json.empty()) {
    nlohmann::json out = {{"model", a.model}, {"epochs", a.epochs}, {"classes", classes}};
    out["finetune"] = {
        {"test_acc", rf.test_acc}, {"seconds", rf.seconds}, {"trainable", rf.trainable}};
    out["scratch"] = {
        {"test_acc", rs.test_acc}, {"seconds", rs.seconds}, {"trainable", rs.trainable}};
    std::ofstream(a.metrics_json) << out.dump(2) << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{
      "Fine-tune a zoo model on Fashion-MNIST classes 5-9 from weights pre-trained on 0-4"};
  app.add_option("--data-dir", a.data_dir, "Fashion-MNIST folder");
  app.add_option("--model", a.model, "zoo model")
      ->check(CLI::IsMember(frugal::models::model_names()));
  app.add_option("--epochs", a.epochs, "epochs of each run")->check(CLI::PositiveNumber);
  app.add_option("--per-class", a.per_class, "training images per class (0: all 6000)");
  app.add_option("--batch-size", a.batch_size)->check(CLI::PositiveNumber);
  app.add_option("--lr", a.lr)->check(CLI::PositiveNumber);
  app.add_option("--seed", a.seed);
  app.add_option("--num-threads", a.num_threads, "torch threads (0: LibTorch's default)");
  app.add_option("--weights", a.weights,
                 "pre-trained weights (.pt from torch.save or "
                 ".safetensors) of this model with 5 classes, 1 channel");
  app.add_option("--out-dir", a.out_dir);
  app.add_option("--metrics-json", a.metrics_json, "write the results as JSON");
  app.add_option("--image-folder", a.image_folder,
                 "fine-tune on DIR/train, test on DIR/val (class sub-folders) with --weights of "
                 "the model with 1000 classes and 3 channels (torchvision's)");
  app.add_option("--image-size", a.image_size, "with --image-folder: the side the model sees")
      ->check(CLI::Range(int64_t{8}, int64_t{1024}));
  CLI11_PARSE(app, argc, argv);
  try {
    if (a.num_threads > 0) torch::set_num_threads(static_cast<int>(a.num_threads));
    std::filesystem::create_directories(a.out_dir);
    if (!a.image_folder.empty()) return finetune_on_folder(a);
    const auto data = frugal::datasets::FashionMnist::load(a.data_dir);
    const auto pre_train = subset(data.train(), 0, a.per_class);
    const auto pre_test = subset(data.test(), 0, 0);
    const auto ft_train = subset(data.train(), 5, a.per_class);
    const auto ft_test = subset(data.test(), 5, 0);

    nlohmann::json out = {{"model", a.model},
                          {"epochs", a.epochs},
                          {"per_class", a.per_class},
                          {"batch_size", a.batch_size},
                          {"threads", torch::get_num_threads()}};
    std::string weights = a.weights;
    if (weights.empty()) {
      torch::manual_seed(static_cast<uint64_t>(a.seed));
      auto net = frugal::models::create_model(a.model, 5, 1);
      const auto r = train(net, a, pre_train, pre_test, a.out_dir + "/pretrain");
      weights = a.out_dir + "/pretrained.safetensors";
      frugal::save_safetensors(*net, weights, {{"model", a.model}, {"classes", "0-4"}});
      std::cout << "pre-train on classes 0-4: test acc " << r.test_acc << ", " << r.seconds
                << " s; weights -> " << weights << "\n";
      out["pretrain"] = {{"test_acc", r.test_acc}, {"seconds", r.seconds}};
    }

    torch::manual_seed(static_cast<uint64_t>(a.seed) + 1);
    auto ft = frugal::models::create_model(a.model, 5, 1);
    frugal::load_state_dict(*ft, weights);  // strict: same architecture
    ft->reset_classifier(5);                // a fresh head for the new classes
    frugal::freeze(*ft, backbone_of(*ft));
    const auto rf = train(ft, a, ft_train, ft_test, a.out_dir + "/finetune");

    torch::manual_seed(static_cast<uint64_t>(a.seed) + 1);
    auto scratch = frugal::models::create_model(a.model, 5, 1);
    const auto rs = train(scratch, a, ft_train, ft_test, a.out_dir + "/scratch");

    std::cout << "classes 5-9, " << a.epochs << " epochs, " << ft_train.first.size(0)
              << " training images:\n"
              << "  fine-tuned (backbone frozen): test acc " << rf.test_acc << ", " << rf.seconds
              << " s, " << rf.trainable << " trainable parameters\n"
              << "  from scratch:                 test acc " << rs.test_acc << ", " << rs.seconds
              << " s, " << rs.trainable << " trainable parameters\n";
    out["finetune"] = {
        {"test_acc", rf.test_acc}, {"seconds", rf.seconds}, {"trainable", rf.trainable}};
    out["scratch"] = {
        {"test_acc", rs.test_acc}, {"seconds", rs.seconds}, {"trainable", rs.trainable}};
    if (!a.metrics_json.empty()) std::ofstream(a.metrics_json) << out.dump(2) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "finetune: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
