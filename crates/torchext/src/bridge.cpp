// The C++ side of ditbench-torchext: what tch 0.24 does not bind.
//
// - autocast with a chosen dtype (tch's `autocast` has none, so CUDA runs fp16 there),
// - the TF32 switches of cuBLAS and cuDNN,
// - activation checkpointing as a custom autograd Function that calls back into Rust,
// - the CUDA caching allocator's counters,
// - the fused (one pass per tensor) AdamW kernel.
//
// Every entry point is `extern "C"` and catches C++ exceptions: a failure comes back as
// a malloc'd message (freed by torchext_free_error), NULL meaning success. No exception
// crosses into Rust, and no Rust panic crosses into C++ (the Rust side catches them).
//
// Only the headers needed are included: a translation unit with torch/torch.h takes
// 27 s to compile on the 2-core machines; ATen/autocast_mode.h pulls in every ATen
// operator, hence the redeclarations below instead.

#include <ATen/Context.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/core/Tensor.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

// Declared exactly so in ATen/autocast_mode.h (torch 2.11), defined in libtorch_cpu.
namespace at::autocast {
TORCH_API bool is_autocast_enabled(at::DeviceType device_type);
TORCH_API void set_autocast_enabled(at::DeviceType device_type, bool enabled);
TORCH_API at::ScalarType get_autocast_dtype(at::DeviceType device_type);
TORCH_API void set_autocast_dtype(at::DeviceType device_type, at::ScalarType dtype);
TORCH_API void clear_cache();
TORCH_API int increment_nesting();
TORCH_API int decrement_nesting();
TORCH_API bool is_autocast_cache_enabled();
TORCH_API void set_autocast_cache_enabled(bool enabled);
} // namespace at::autocast

// The Rust side passes c10's own enum values (src/precision.rs names them).
static_assert(static_cast<int>(c10::DeviceType::CPU) == 0);
static_assert(static_cast<int>(c10::DeviceType::CUDA) == 1);
static_assert(static_cast<int>(c10::ScalarType::Half) == 5);
static_assert(static_cast<int>(c10::ScalarType::BFloat16) == 15);

namespace {

template <class F>
char* guarded(F&& f) noexcept {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return strdup(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return strdup(e.what());
  } catch (...) {
    return strdup("unknown C++ exception");
  }
}

// One `with torch.autocast(device_type, dtype, enabled, cache_enabled)` block, as
// torch/amp/autocast_mode.py enters and leaves it: the nesting count decides when the
// cast cache (fp32 weights cast once per forward) is cleared.
class AutocastScope {
 public:
  AutocastScope(c10::DeviceType device, bool enabled, c10::ScalarType dtype, bool cache_enabled)
      : device_(device),
        prev_enabled_(at::autocast::is_autocast_enabled(device)),
        prev_dtype_(at::autocast::get_autocast_dtype(device)),
        prev_cache_enabled_(at::autocast::is_autocast_cache_enabled()) {
    at::autocast::set_autocast_enabled(device, enabled);
    at::autocast::set_autocast_dtype(device, dtype);
    at::autocast::increment_nesting();
    at::autocast::set_autocast_cache_enabled(cache_enabled);
  }
  ~AutocastScope() {
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(device_, prev_enabled_);
    at::autocast::set_autocast_dtype(device_, prev_dtype_);
    at::autocast::set_autocast_cache_enabled(prev_cache_enabled_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType device_;
  bool prev_enabled_;
  c10::ScalarType prev_dtype_;
  bool prev_cache_enabled_;
};

} // namespace

// The Rust closure of a checkpoint, seen from C++. `call` takes ownership of the n heap
// tensors it is given and, on success, stores a heap tensor for C++ to own in *out; on a
// panic it returns false after writing the message into `error` (a std::string*).
extern "C" {
typedef bool (*torchext_call_fn)(void* ctx, at::Tensor** inputs, size_t n, at::Tensor** out, void* error);
typedef void (*torchext_drop_fn)(void* ctx);

void torchext_set_error(void* error, const char* msg, size_t len) {
  static_cast<std::string*>(error)->assign(msg, len);
}
}

namespace {

// Held by the autograd node (through a capsule in ctx->saved_data), so the closure lives
// exactly as long as the node may still need it and is freed with it.
struct RustClosure : torch::CustomClassHolder {
  RustClosure(torchext_call_fn call, torchext_drop_fn drop, void* ctx) : call_(call), drop_(drop), ctx_(ctx) {}
  ~RustClosure() override { drop_(ctx_); }

  at::Tensor operator()(const std::vector<at::Tensor>& inputs) const {
    std::vector<at::Tensor*> owned;
    owned.reserve(inputs.size());
    for (const auto& t : inputs) {
      owned.push_back(new at::Tensor(t));
    }
    at::Tensor* out = nullptr;
    std::string error;
    bool ok = call_(ctx_, owned.data(), owned.size(), &out, &error);
    std::unique_ptr<at::Tensor> result(out);
    TORCH_CHECK(ok, "checkpointed function panicked: ", error);
    TORCH_CHECK(result && result->defined(), "checkpointed function returned an undefined tensor");
    return std::move(*result);
  }

 private:
  torchext_call_fn call_;
  torchext_drop_fn drop_;
  void* ctx_;
};

// torch.utils.checkpoint's reentrant CheckpointFunction for a single output: forward runs
// the closure without building a graph and keeps only its inputs; backward runs it again
// with grad enabled and backpropagates through that recomputed graph, so parameters
// accumulate .grad exactly as they would without checkpointing.
//
// The RNG state is not saved and restored as torch does (preserve_rng_state): DiT blocks
// draw no random numbers (no dropout), so the recomputation is identical without it.
struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  using Ctx = torch::autograd::AutogradContext;

  static at::Tensor forward(Ctx* ctx, at::TensorList inputs, const c10::intrusive_ptr<RustClosure>& f) {
    ctx->saved_data["f"] = c10::IValue::make_capsule(f);
    // Recorded to run the recomputation under the same autocast state (torch does this
    // too): backward may run outside the autocast block, and on another thread.
    for (auto device : {c10::DeviceType::CPU, c10::DeviceType::CUDA}) {
      std::string key = c10::DeviceTypeName(device, /*lower_case=*/true);
      ctx->saved_data[key + "_enabled"] = at::autocast::is_autocast_enabled(device);
      ctx->saved_data[key + "_dtype"] = at::autocast::get_autocast_dtype(device);
    }
    ctx->saved_data["cache_enabled"] = at::autocast::is_autocast_cache_enabled();
    ctx->save_for_backward(inputs.vec());
    return (*f)(inputs.vec());
  }

  static torch::autograd::variable_list backward(Ctx* ctx, torch::autograd::variable_list grad_outputs) {
    auto f = c10::static_intrusive_pointer_cast<RustClosure>(ctx->saved_data.at("f").toCapsule());
    std::vector<at::Tensor> detached;
    for (const auto& x : ctx->get_saved_variables()) {
      detached.push_back(x.detach().requires_grad_(x.requires_grad()));
    }
    at::Tensor out;
    {
      at::AutoGradMode enable_grad(true);
      bool cache_enabled = ctx->saved_data.at("cache_enabled").toBool();
      auto scope = [&](c10::DeviceType device) {
        std::string key = c10::DeviceTypeName(device, /*lower_case=*/true);
        return std::make_unique<AutocastScope>(
            device,
            ctx->saved_data.at(key + "_enabled").toBool(),
            ctx->saved_data.at(key + "_dtype").toScalarType(),
            cache_enabled);
      };
      auto cpu = scope(c10::DeviceType::CPU);
      auto cuda = scope(c10::DeviceType::CUDA);
      out = (*f)(detached);
    }
    TORCH_CHECK(out.requires_grad(), "the recomputed checkpoint output does not require grad");
    torch::autograd::backward({out}, {grad_outputs.at(0)});
    torch::autograd::variable_list grads;
    for (const auto& x : detached) {
      grads.push_back(x.grad());
    }
    grads.emplace_back(); // the closure argument has no gradient
    return grads;
  }
};

} // namespace

extern "C" {

void torchext_free_error(char* error) { free(error); }

// Enters autocast for a device type; *scope must be passed to torchext_autocast_exit on
// the same thread (autocast state is thread-local).
char* torchext_autocast_enter(int device_type, int dtype, void** scope) {
  return guarded([&] {
    *scope = new AutocastScope(
        static_cast<c10::DeviceType>(device_type),
        /*enabled=*/true,
        static_cast<c10::ScalarType>(dtype),
        /*cache_enabled=*/at::autocast::is_autocast_cache_enabled());
  });
}

void torchext_autocast_exit(void* scope) { delete static_cast<AutocastScope*>(scope); }

// torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32. These
// legacy setters keep torch 2.11's new per-backend precision settings consistent; the
// new setter alone would make the legacy getters, which cuBLAS code still reads, throw.
char* torchext_set_tf32(bool enabled) {
  return guarded([&] {
    at::globalContext().setAllowTF32CuBLAS(enabled);
    at::globalContext().setAllowTF32CuDNN(enabled);
  });
}

char* torchext_tf32_enabled(bool* enabled) {
  return guarded([&] {
    *enabled = at::globalContext().allowTF32CuBLAS() && at::globalContext().allowTF32CuDNN();
  });
}

// Runs the closure checkpointed when autograd would record it; otherwise (grad mode off,
// or no input requires grad, where a Function could not route gradients to the
// closure's parameters) runs it plainly. *out receives a heap tensor the caller owns.
char* torchext_checkpoint(
    const at::Tensor* const* inputs,
    size_t n,
    torchext_call_fn call,
    torchext_drop_fn drop,
    void* ctx,
    at::Tensor** out) {
  return guarded([&] {
    auto f = c10::make_intrusive<RustClosure>(call, drop, ctx);
    std::vector<at::Tensor> xs;
    bool any_requires_grad = false;
    for (size_t i = 0; i < n; ++i) {
      xs.push_back(*inputs[i]);
      any_requires_grad = any_requires_grad || xs.back().requires_grad();
    }
    at::Tensor y = c10::GradMode::is_enabled() && any_requires_grad
        ? CheckpointFunction::apply(at::TensorList(xs), f)
        : (*f)(xs);
    *out = new at::Tensor(std::move(y));
  });
}

// The CUDA caching allocator's counters (torch.cuda.memory_allocated and
// max_memory_allocated), reached through c10's device-generic allocator interface so
// that no CUDA header is needed. An allocator not yet initialised has allocated nothing.
char* torchext_cuda_memory_stats(int device, int64_t* allocated, int64_t* peak) {
  return guarded([&] {
    auto* allocator = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    if (!allocator->initialized()) {
      *allocated = 0;
      *peak = 0;
      return;
    }
    auto stats = allocator->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto& bytes =
        stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
    *allocated = bytes.current;
    *peak = bytes.peak;
  });
}

// torch.cuda.reset_peak_memory_stats.
char* torchext_cuda_reset_peak(int device) {
  return guarded([&] {
    auto* allocator = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    if (allocator->initialized()) {
      allocator->resetPeakStats(static_cast<c10::DeviceIndex>(device));
    }
  });
}

// torch.optim.AdamW(fused=True)'s kernel on n tensors: parameters, gradients and both
// moments updated in one pass each, instead of the ~9 passes of the for-loop version.
// `step` is the step count after this step (one float tensor on the parameters'
// device, shared by all). Runs without grad mode, as optimizers do.
char* torchext_fused_adamw(const at::Tensor* const* params, const at::Tensor* const* grads,
                           const at::Tensor* const* exp_avgs, const at::Tensor* const* exp_avg_sqs,
                           const at::Tensor* step, size_t n, double lr, double beta1, double beta2,
                           double weight_decay, double eps) {
  return guarded([&] {
    c10::NoGradGuard no_grad;
    std::vector<at::Tensor> p, g, m, v, steps;
    for (size_t i = 0; i < n; ++i) {
      p.push_back(*params[i]);
      g.push_back(*grads[i]);
      m.push_back(*exp_avgs[i]);
      v.push_back(*exp_avg_sqs[i]);
      steps.push_back(*step);
    }
    at::_fused_adamw_(p, g, m, v, /*max_exp_avg_sqs=*/{}, steps, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt,
                      /*found_inf=*/std::nullopt);
  });
}

} // extern "C"
