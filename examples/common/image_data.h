// What the examples share about image folders: decoding one into tensors held in memory.
#pragma once

#include <frugal/frugal.h>
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace frugal_examples {

/// The images of a folder of class sub-folders (torchvision's ImageFolder order), decoded once by
/// an ImageLoader (Resize + CenterCrop to `size`) and normalized with ImageNet's mean and std:
/// N x 3 x size x size float32, and the labels. `classes` receives the number of classes.
inline std::pair<at::Tensor, at::Tensor> load_image_folder(const std::string& dir, int64_t size,
                                                           int64_t threads, int64_t* classes) {
  frugal::ImageFolder folder(dir);
  *classes = static_cast<int64_t>(folder.classes().size());
  frugal::ImageLoader loader(folder.samples(),
                             frugal::compose({std::make_shared<frugal::Resize>(size),
                                              std::make_shared<frugal::CenterCrop>(size)}),
                             size, size,
                             frugal::ImageLoaderOptions(256).pad_shards(false).threads(threads));
  std::vector<at::Tensor> xs, ys;
  loader.start_epoch(0);
  while (auto b = loader.next()) {
    xs.push_back(frugal::normalize_batch(b->data, {0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}));
    ys.push_back(b->target.clone());
  }
  return {at::cat(xs), at::cat(ys)};
}

}  // namespace frugal_examples
