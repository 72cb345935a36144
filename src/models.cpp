#include "frugal/models.h"

#include <torch/torch.h>

#include "frugal/error.h"

namespace frugal::models {

namespace nn = torch::nn;

namespace {
int64_t after_two_pools(int64_t size) {
  // conv 3x3 with padding 1 keeps the size; each 2x2 max-pool halves it.
  return size / 2 / 2;
}
}  // namespace

torch::nn::Sequential SmallCnn(int64_t classes, int64_t in_channels, int64_t image_size,
                               double dropout) {
  FRUGAL_CHECK(classes >= 2 && in_channels >= 1 && image_size >= 4,
               "SmallCnn: need classes >= 2, in_channels >= 1, image_size >= 4; got ", classes,
               ", ", in_channels, ", ", image_size);
  const int64_t s = after_two_pools(image_size);
  return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in_channels, 32, 3).padding(1)), nn::ReLU(),
                        nn::MaxPool2d(2), nn::Conv2d(nn::Conv2dOptions(32, 64, 3).padding(1)),
                        nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(), nn::Linear(64 * s * s, 128),
                        nn::ReLU(), nn::Dropout(dropout), nn::Linear(128, classes));
}

torch::nn::Sequential SmallCnnBn(int64_t classes, int64_t in_channels, int64_t image_size) {
  FRUGAL_CHECK(classes >= 2 && in_channels >= 1 && image_size >= 4,
               "SmallCnnBn: need classes >= 2, in_channels >= 1, image_size >= 4; got ", classes,
               ", ", in_channels, ", ", image_size);
  const int64_t s = after_two_pools(image_size);
  return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in_channels, 32, 3).padding(1).bias(false)),
                        nn::BatchNorm2d(32), nn::ReLU(), nn::MaxPool2d(2),
                        nn::Conv2d(nn::Conv2dOptions(32, 64, 3).padding(1).bias(false)),
                        nn::BatchNorm2d(64), nn::ReLU(), nn::MaxPool2d(2), nn::Flatten(),
                        nn::Linear(64 * s * s, 128), nn::ReLU(), nn::Linear(128, classes));
}

torch::nn::Sequential Mlp(int64_t inputs, int64_t hidden, int64_t classes, int64_t layers) {
  FRUGAL_CHECK(inputs >= 1 && hidden >= 1 && classes >= 2 && layers >= 1,
               "Mlp: need inputs, hidden >= 1, classes >= 2, layers >= 1; got ", inputs, ", ",
               hidden, ", ", classes, ", ", layers);
  nn::Sequential net{nn::Flatten()};
  int64_t width = inputs;
  for (int64_t i = 0; i < layers; ++i) {
    net->push_back(nn::Linear(width, hidden));
    net->push_back(nn::ReLU());
    width = hidden;
  }
  net->push_back(nn::Linear(width, classes));
  return net;
}

}  // namespace frugal::models
