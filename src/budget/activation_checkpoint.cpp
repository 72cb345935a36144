#include "frugal/budget/activation_checkpoint.h"

#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/torch.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "compat.h"
#include "frugal/error.h"

namespace frugal {

namespace {

using torch::autograd::variable_list;

// Note [Why a custom Node rather than torch::autograd::Function]
// torch::autograd::Function<T>::apply registers only its direct tensor arguments as graph edges,
// so a segment's parameters (a runtime-length list) could not be inputs of the op. Their
// gradients would then have to be accumulated into .grad from inside backward (PyTorch's
// "reentrant" checkpoint), which yields no gradients at all when the segment's input does not
// require grad (the first segment, fed with data), and breaks torch::autograd::grad(loss, params).
// A Node with one edge per parameter makes the checkpointed segment an ordinary op of the graph:
// the engine routes the recomputed gradients to the parameters like any other op's.

// The state of the generators a segment may draw from: the default CPU generator always, the
// default generator of the input's CUDA device too. Through at::Context's device-generic accessor
// this needs no CUDA header, and a CPU-only build never sees a CUDA input.
class RngState {
 public:
  static RngState capture(const at::Tensor& input) {
    RngState state;
    state.add(at::detail::getDefaultCPUGenerator());
    if (input.is_cuda()) state.add(at::globalContext().defaultGenerator(input.device()));
    return state;
  }
  void restore() const {
    for (const auto& [generator, state] : states_) {
      at::Generator g = generator;
      std::lock_guard<std::mutex> lock(g.mutex());
      g.set_state(state);
    }
  }

 private:
  void add(at::Generator generator) {
    std::lock_guard<std::mutex> lock(generator.mutex());
    at::Tensor state = generator.get_state();
    states_.emplace_back(std::move(generator), std::move(state));
  }
  std::vector<std::pair<at::Generator, at::Tensor>> states_;
};

// Sets the generators to `state` for the recomputation and back to where the caller's stream
// was afterwards, so checkpointing does not shift the random numbers drawn after backward.
class RngFork {
 public:
  RngFork(const RngState* state, const at::Tensor& input) {
    if (state == nullptr) return;
    outer_ = RngState::capture(input);
    active_ = true;
    state->restore();
  }
  ~RngFork() {
    if (active_) outer_.restore();
  }
  RngFork(const RngFork&) = delete;
  RngFork& operator=(const RngFork&) = delete;

 private:
  RngState outer_;
  bool active_ = false;
};

// Autocast on the devices a segment can run on (CPU always, CUDA for a CUDA input).
struct AutocastState {
  bool cuda = false;
  bool cpu_enabled = false;
  at::ScalarType cpu_dtype = at::kBFloat16;
  bool cuda_enabled = false;
  at::ScalarType cuda_dtype = at::kHalf;
  bool cache_enabled = true;

  static AutocastState capture(bool cuda) {
    AutocastState s;
    s.cuda = cuda;
    s.cpu_enabled = compat::autocast_enabled(c10::DeviceType::CPU);
    s.cpu_dtype = compat::autocast_dtype(c10::DeviceType::CPU);
    if (cuda) {
      s.cuda_enabled = compat::autocast_enabled(c10::DeviceType::CUDA);
      s.cuda_dtype = compat::autocast_dtype(c10::DeviceType::CUDA);
    }
    s.cache_enabled = at::autocast::is_autocast_cache_enabled();
    return s;
  }
  void apply() const {
    compat::set_autocast(c10::DeviceType::CPU, cpu_enabled, cpu_dtype);
    if (cuda) compat::set_autocast(c10::DeviceType::CUDA, cuda_enabled, cuda_dtype);
    at::autocast::set_autocast_cache_enabled(cache_enabled);
  }
};

// Note [Autocast's weight cache is off inside checkpointed segments]
// Autocast caches the low-precision copy of a leaf parameter for the rest of the autocast
// region, whatever the grad mode. A copy made in the no-grad forward has no grad_fn: reused later
// (by the recomputation, if backward runs inside the region, or by another use of a shared
// weight) it would silently cut the weight's gradient. So both the no-grad forward and the
// recomputation run with the cache off; the casts are the same values, only not reused.
class AutocastScope {
 public:
  explicit AutocastScope(const AutocastState& state)
      : previous_(AutocastState::capture(state.cuda)) {
    AutocastState inside = state;
    inside.cache_enabled = false;
    inside.apply();
  }
  ~AutocastScope() { previous_.apply(); }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  AutocastState previous_;
};

using SegmentFn = std::function<at::Tensor(const at::Tensor&)>;

class CheckpointBackward : public torch::autograd::Node {
 public:
  std::string name() const override { return "frugal::CheckpointBackward"; }

  // Edges: 0 = the segment's input, 1.. = parameters_ (all require grad).
  variable_list apply(variable_list&& grads) override {
    FRUGAL_CHECK(!released_,
                 "checkpoint: backward ran a second time through a checkpointed segment whose "
                 "saved input was already freed; pass retain_graph=true to the first backward");
    FRUGAL_CHECK(!at::GradMode::is_enabled(),
                 "checkpoint: double backward (create_graph=true) through a checkpointed segment "
                 "is not supported");
    FRUGAL_CHECK(input_._version() == input_version_,
                 "checkpoint: the input of a checkpointed segment was modified in place after its "
                 "forward (version ",
                 input_version_, " -> ", input_._version(),
                 "); the recomputation would see different values");
    variable_list result(num_outputs());
    if (grads.empty() || !grads[0].defined()) return result;

    at::Tensor x = input_.detach();
    std::vector<at::Tensor> wrt;
    std::vector<size_t> slots;
    if (task_should_compute_output(0)) {
      x.requires_grad_(true);
      wrt.push_back(x);
      slots.push_back(0);
    }
    for (size_t i = 0; i < parameters_.size(); ++i) {
      if (task_should_compute_output(i + 1)) {
        wrt.push_back(parameters_[i]);
        slots.push_back(i + 1);
      }
    }
    if (wrt.empty()) return result;

    at::Tensor out;
    {
      RngFork rng(preserve_rng_state_ ? &rng_ : nullptr, input_);
      AutocastScope autocast(autocast_);
      at::AutoGradMode grad_mode(true);
      out = fn_(x);
    }
    if (!out.requires_grad()) return result;  // nothing in wrt was used
    auto g = torch::autograd::grad({out}, wrt, {grads[0]}, /*retain_graph=*/false,
                                   /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t i = 0; i < slots.size(); ++i) result[slots[i]] = std::move(g[i]);
    return result;
  }

  void release_variables() override {
    input_ = at::Tensor();
    parameters_.clear();
    fn_ = nullptr;
    released_ = true;
  }

  SegmentFn fn_;
  at::Tensor input_;
  int64_t input_version_ = 0;
  std::vector<at::Tensor> parameters_;
  bool preserve_rng_state_ = true;
  RngState rng_;
  AutocastState autocast_;
  bool released_ = false;
};

}  // namespace

at::Tensor checkpoint(const std::function<at::Tensor(const at::Tensor&)>& fn,
                      const at::Tensor& input, const std::vector<at::Tensor>& parameters,
                      bool preserve_rng_state) {
  FRUGAL_CHECK(fn != nullptr, "checkpoint: the function is empty");
  FRUGAL_CHECK(input.defined(), "checkpoint: the input tensor is undefined");
  std::vector<at::Tensor> trainable;
  for (const auto& p : parameters) {
    if (p.defined() && p.requires_grad()) trainable.push_back(p);
  }
  if (!at::GradMode::is_enabled() || (!input.requires_grad() && trainable.empty())) {
    return fn(input);  // nothing to differentiate: nothing to save or recompute
  }

  auto node =
      std::shared_ptr<CheckpointBackward>(new CheckpointBackward(), torch::autograd::deleteNode);
  node->autocast_ = AutocastState::capture(input.is_cuda());
  node->preserve_rng_state_ = preserve_rng_state;
  if (preserve_rng_state) node->rng_ = RngState::capture(input);

  const int64_t version = input._version();
  at::Tensor out;
  {
    at::NoGradGuard no_grad;
    AutocastScope autocast(node->autocast_);  // same state, weight cache off
    out = fn(input);
    FRUGAL_CHECK(out.defined(), "checkpoint: the segment returned an undefined tensor");
    // A view (Flatten at the segment's end) or the input itself cannot take the op's grad_fn.
    if (out.is_view() || out.is_same(input)) out = out.clone();
  }
  FRUGAL_CHECK(input._version() == version,
               "checkpoint: the segment modified its input in place (an in-place first module, "
               "such as ReLU(ReLUOptions().inplace(true))?); the recomputation in backward would "
               "see the modified input: move the segment boundary or make that op out of place");
  FRUGAL_CHECK(out.is_floating_point() || out.is_complex(),
               "checkpoint: the segment must return a floating-point tensor to differentiate, got ",
               out.scalar_type());

  node->set_next_edges(torch::autograd::collect_next_edges(input, trainable));
  node->fn_ = fn;
  node->input_ = input;
  node->input_version_ = version;
  node->parameters_ = std::move(trainable);
  torch::autograd::create_gradient_edge(out, node);
  return out;
}

namespace {

void check_segments(const char* who, int64_t segments, size_t modules) {
  FRUGAL_CHECK(segments >= 1 && segments <= static_cast<int64_t>(modules), who,
               ": segments must be between 1 and the number of modules in the Sequential (",
               modules, "), got segments = ", segments);
}

}  // namespace

at::Tensor checkpoint_sequential(torch::nn::Sequential& seq, int64_t segments,
                                 const at::Tensor& input, bool preserve_rng_state) {
  FRUGAL_CHECK(!seq.is_empty(), "checkpoint_sequential: the Sequential is null");
  const size_t n = seq->size();
  check_segments("checkpoint_sequential", segments, n);
  const size_t size = n / static_cast<size_t>(segments);
  auto run = [seq](size_t begin, size_t end, at::Tensor x) mutable {
    for (size_t i = begin; i < end; ++i) x = (seq->begin() + i)->forward(x);
    return x;
  };
  at::Tensor x = input;
  size_t begin = 0;
  for (int64_t s = 0; s + 1 < segments; ++s, begin += size) {
    const size_t end = begin + size;
    std::vector<at::Tensor> params;
    for (size_t i = begin; i < end; ++i) {
      for (const auto& p : seq->ptr(i)->parameters()) params.push_back(p);
    }
    x = checkpoint([run, begin, end](const at::Tensor& t) mutable { return run(begin, end, t); }, x,
                   params, preserve_rng_state);
  }
  return run(begin, n, x);  // the last segment runs normally
}

CheckpointedSequentialImpl::CheckpointedSequentialImpl(torch::nn::Sequential sequential,
                                                       CheckpointedSequentialOptions options)
    : sequential_(std::move(sequential)), options_(options) {
  FRUGAL_CHECK(!sequential_.is_empty(), "CheckpointedSequential: the Sequential is null");
  check_segments("CheckpointedSequential", options_.segments(), sequential_->size());
  // The Sequential's children under their own names ("0", "1", ...): same parameters, same
  // state-dict keys as the plain model; train()/eval()/to() reach them as usual.
  for (const auto& child : sequential_->named_children()) {
    register_module(child.key(), child.value());
  }
}

at::Tensor CheckpointedSequentialImpl::forward(const at::Tensor& input) {
  if (is_training() && at::GradMode::is_enabled()) {
    return checkpoint_sequential(sequential_, options_.segments(), input,
                                 options_.preserve_rng_state());
  }
  return sequential_->forward(input);
}

}  // namespace frugal
