#include "frugal/models/channel_pruning.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "frugal/error.h"
#include "frugal/models/zoo.h"

namespace frugal {

namespace {

namespace nn = torch::nn;

struct Layer {
  nn::Module* module;
  std::string path;
};

std::string join(const std::string& parent, const std::string& child) {
  return parent.empty() ? child : parent + "." + child;
}

template <typename T>
T* as(nn::Module* m) {
  return dynamic_cast<T*>(m);
}

bool is_dense_conv(nn::Module* m) {
  auto* c = as<nn::Conv2dImpl>(m);
  return c != nullptr && c->options.groups() == 1;
}

bool is_depthwise(nn::Module* m, int64_t channels) {
  auto* c = as<nn::Conv2dImpl>(m);
  return c != nullptr && c->options.groups() == channels && c->options.in_channels() == channels &&
         c->options.out_channels() == channels && channels > 1;
}

/// Layers that act on each channel alone (nothing to cut).
bool is_elementwise(nn::Module* m) {
  return as<nn::ReLUImpl>(m) || as<nn::ReLU6Impl>(m) || as<nn::SiLUImpl>(m) ||
         as<nn::GELUImpl>(m) || as<nn::SigmoidImpl>(m) || as<nn::TanhImpl>(m) ||
         as<nn::LeakyReLUImpl>(m) || as<nn::IdentityImpl>(m) || as<nn::DropoutImpl>(m) ||
         as<nn::Dropout2dImpl>(m) || as<nn::MaxPool2dImpl>(m) || as<nn::AvgPool2dImpl>(m) ||
         as<nn::AdaptiveAvgPool2dImpl>(m) || as<nn::AdaptiveMaxPool2dImpl>(m) ||
         as<models::HardswishImpl>(m) || as<models::HardsigmoidImpl>(m) ||
         as<models::StochasticDepthImpl>(m);
}

int64_t out_channels(nn::Module* m) {
  if (auto* c = as<nn::Conv2dImpl>(m)) return c->options.out_channels();
  return as<nn::LinearImpl>(m)->options.out_features();
}

/// The children of a Sequential, nested Sequentials flattened (they run in the same order).
void flatten(nn::Module& seq, const std::string& path, std::vector<Layer>& out) {
  for (const auto& child : seq.named_children()) {
    const std::string p = join(path, child.key());
    if (as<nn::SequentialImpl>(child.value().get())) {
      flatten(*child.value(), p, out);
    } else {
      out.push_back({child.value().get(), p});
    }
  }
}

struct Group {
  Layer producer;
  Layer consumer;
  std::vector<Layer> along;
  int64_t channels = 0;
  int64_t columns_per_channel = 1;
};

/// Groups in a flattened Sequential: producer -> (channel-wise layers) -> consumer. Opaque layers
/// (a residual block, anything unknown) are returned for a walk of their own.
void chain_groups(const std::vector<Layer>& flat, std::vector<Group>& groups,
                  std::vector<Layer>& opaque) {
  for (size_t i = 0; i < flat.size(); ++i) {
    nn::Module* m = flat[i].module;
    const bool known = as<nn::Conv2dImpl>(m) || as<nn::LinearImpl>(m) || is_elementwise(m) ||
                       as<nn::BatchNorm2dImpl>(m) || as<nn::BatchNorm1dImpl>(m) ||
                       as<nn::FlattenImpl>(m) || as<models::SqueezeExcitationImpl>(m);
    if (!known) opaque.push_back(flat[i]);
    if (!is_dense_conv(m) && !as<nn::LinearImpl>(m)) continue;
    const bool conv_producer = is_dense_conv(m);
    Group g;
    g.producer = flat[i];
    g.channels = out_channels(m);
    bool flattened = false;
    for (size_t j = i + 1; j < flat.size(); ++j) {
      nn::Module* n = flat[j].module;
      if (is_dense_conv(n)) {
        if (conv_producer && !flattened &&
            as<nn::Conv2dImpl>(n)->options.in_channels() == g.channels) {
          g.consumer = flat[j];
          groups.push_back(g);
        }
        break;
      }
      if (auto* lin = as<nn::LinearImpl>(n)) {
        const int64_t in = lin->options.in_features();
        if (in % g.channels == 0 && (flattened || !conv_producer)) {
          g.columns_per_channel = in / g.channels;
          if (conv_producer || g.columns_per_channel == 1) {
            g.consumer = flat[j];
            groups.push_back(g);
          }
        }
        break;
      }
      if (auto* bn = as<nn::BatchNorm2dImpl>(n)) {
        if (bn->options.num_features() != g.channels || !conv_producer || flattened) break;
        g.along.push_back(flat[j]);
      } else if (auto* bn1 = as<nn::BatchNorm1dImpl>(n)) {
        if (bn1->options.num_features() != g.channels || conv_producer) break;
        g.along.push_back(flat[j]);
      } else if (is_depthwise(n, g.channels) && !flattened) {
        g.along.push_back(flat[j]);
      } else if (auto* se = as<models::SqueezeExcitationImpl>(n)) {
        if (flattened || se->fc1->options.in_channels() != g.channels) break;
        g.along.push_back(flat[j]);
      } else if (auto* f = as<nn::FlattenImpl>(n)) {
        if (!conv_producer || f->options.start_dim() != 1 || f->options.end_dim() != -1) break;
        flattened = true;
      } else if (!is_elementwise(n)) {
        break;
      }
    }
  }
}

/// The ResNet block rule: conv1/bn1/conv2[/bn2/conv3] children.
void block_groups(nn::Module& m, const std::string& path, std::vector<Group>& groups) {
  auto child = [&](const std::string& name) -> nn::Module* {
    for (const auto& c : m.named_children()) {
      if (c.key() == name) return c.value().get();
    }
    return nullptr;
  };
  auto layer = [&](const std::string& name) { return Layer{child(name), join(path, name)}; };
  auto link = [&](const std::string& a, const std::string& bn, const std::string& b) {
    nn::Module *pa = child(a), *pbn = child(bn), *pb = child(b);
    if (!is_dense_conv(pa) || !as<nn::BatchNorm2dImpl>(pbn) || !is_dense_conv(pb)) return;
    const int64_t c = out_channels(pa);
    if (as<nn::BatchNorm2dImpl>(pbn)->options.num_features() != c ||
        as<nn::Conv2dImpl>(pb)->options.in_channels() != c)
      return;
    Group g;
    g.producer = layer(a);
    g.consumer = layer(b);
    g.along = {layer(bn)};
    g.channels = c;
    groups.push_back(g);
  };
  link("conv1", "bn1", "conv2");
  link("conv2", "bn2", "conv3");
}

void walk(nn::Module& m, const std::string& path, std::vector<Group>& groups) {
  if (as<nn::SequentialImpl>(&m)) {
    std::vector<Layer> flat, opaque;
    flatten(m, path, flat);
    chain_groups(flat, groups, opaque);
    for (const auto& o : opaque) walk(*o.module, o.path, groups);
    return;
  }
  block_groups(m, path, groups);
  for (const auto& c : m.named_children()) walk(*c.value(), join(path, c.key()), groups);
}

/// Replaces a parameter's or buffer's data (a new shape) and drops its gradient.
void reshape_to(at::Tensor& t, const at::Tensor& value) {
  if (!t.defined()) return;
  t.set_data(value.contiguous());
  if (t.grad().defined()) t.mutable_grad() = at::Tensor();
}

void keep_rows(at::Tensor& t, const at::Tensor& idx) {
  if (t.defined()) reshape_to(t, t.detach().index_select(0, idx));
}

void keep_columns(at::Tensor& t, const at::Tensor& idx) {
  if (t.defined()) reshape_to(t, t.detach().index_select(1, idx));
}

template <typename BatchNorm>
void cut_batch_norm(BatchNorm& bn, const at::Tensor& idx) {
  keep_rows(bn.weight, idx);
  keep_rows(bn.bias, idx);
  keep_rows(bn.running_mean, idx);
  keep_rows(bn.running_var, idx);
  bn.options.num_features(idx.numel());
}

void cut_outputs(nn::Module* m, const at::Tensor& idx) {
  const int64_t k = idx.numel();
  if (auto* c = as<nn::Conv2dImpl>(m)) {
    keep_rows(c->weight, idx);
    keep_rows(c->bias, idx);
    const bool depthwise = c->options.groups() > 1;
    c->options.out_channels(k);
    if (depthwise) {
      c->options.in_channels(k);
      c->options.groups(k);
    }
  } else if (auto* l = as<nn::LinearImpl>(m)) {
    keep_rows(l->weight, idx);
    keep_rows(l->bias, idx);
    l->options.out_features(k);
  } else if (auto* bn = as<nn::BatchNorm2dImpl>(m)) {
    cut_batch_norm(*bn, idx);
  } else if (auto* bn1 = as<nn::BatchNorm1dImpl>(m)) {
    cut_batch_norm(*bn1, idx);
  } else if (auto* se = as<models::SqueezeExcitationImpl>(m)) {
    keep_columns(se->fc1->weight, idx);
    se->fc1->options.in_channels(k);
    keep_rows(se->fc2->weight, idx);
    keep_rows(se->fc2->bias, idx);
    se->fc2->options.out_channels(k);
  }
}

void cut_inputs(nn::Module* m, const at::Tensor& idx, int64_t columns_per_channel) {
  if (auto* c = as<nn::Conv2dImpl>(m)) {
    keep_columns(c->weight, idx);
    c->options.in_channels(idx.numel());
  } else if (auto* l = as<nn::LinearImpl>(m)) {
    at::Tensor cols = idx;
    if (columns_per_channel > 1) {
      cols = (idx.unsqueeze(1) * columns_per_channel +
              at::arange(columns_per_channel, idx.options()).unsqueeze(0))
                 .reshape({-1});
    }
    keep_columns(l->weight, cols);
    l->options.in_features(cols.numel());
  }
}

int64_t count_parameters(nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace

ChannelPruningReport prune_channels(nn::Module& model, const ChannelPruningOptions& options) {
  FRUGAL_CHECK(options.amount() >= 0.0 && options.amount() < 1.0,
               "prune_channels: options.amount must be in [0, 1), got ", options.amount());
  FRUGAL_CHECK(options.min_channels() >= 1,
               "prune_channels: options.min_channels must be >= 1, "
               "got ",
               options.min_channels());
  std::vector<Group> groups;
  walk(model, "", groups);
  FRUGAL_CHECK(!groups.empty(), "prune_channels: model of type ", model.name(),
               " has no prunable channel group (a Conv2d or Linear whose outputs reach another "
               "through BatchNorm, activations or pooling only, a ResNet block, an inverted "
               "residual block)");
  ChannelPruningReport report;
  report.parameters_before = count_parameters(model);
  torch::NoGradGuard no_grad;
  // Every group's channels are chosen on the weights as they are, before any layer is cut (as
  // ln_structured on each producer would), then the cuts are made.
  std::vector<at::Tensor> kept;
  for (const auto& g : groups) {
    ChannelGroup out;
    out.producer = g.producer.path;
    out.consumer = g.consumer.path;
    for (const auto& a : g.along) out.along.push_back(a.path);
    out.channels_before = g.channels;
    out.columns_per_channel = g.columns_per_channel;
    // torch.nn.utils.prune.ln_structured(n=1, dim=0): round(amount x channels) pruned (Python's
    // round, half to even), the channels of largest L1 norm kept.
    const auto pruned = static_cast<int64_t>(std::nearbyint(options.amount() * g.channels));
    const int64_t keep =
        std::max(g.channels - pruned, std::min(options.min_channels(), g.channels));
    at::Tensor w = as<nn::Conv2dImpl>(g.producer.module)
                       ? as<nn::Conv2dImpl>(g.producer.module)->weight.detach()
                       : as<nn::LinearImpl>(g.producer.module)->weight.detach();
    at::Tensor norms = w.abs().reshape({g.channels, -1}).sum(1);
    at::Tensor idx = std::get<1>(norms.topk(keep, 0, /*largest=*/true, /*sorted=*/true));
    idx = std::get<0>(idx.sort());
    out.kept.assign(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + idx.numel());
    report.channels_before += g.channels;
    report.channels_after += keep;
    report.groups.push_back(std::move(out));
    kept.push_back(idx);
  }
  for (size_t i = 0; i < groups.size(); ++i) {
    const Group& g = groups[i];
    if (kept[i].numel() == g.channels) continue;
    cut_outputs(g.producer.module, kept[i]);
    for (const auto& a : g.along) cut_outputs(a.module, kept[i]);
    cut_inputs(g.consumer.module, kept[i], g.columns_per_channel);
  }
  report.parameters_after = count_parameters(model);
  return report;
}

}  // namespace frugal
