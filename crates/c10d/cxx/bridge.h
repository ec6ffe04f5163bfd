// The C ABI between ditbench-c10d (Rust) and PyTorch's c10d.
//
// Every exported function catches all C++ exceptions (none may unwind into Rust) and
// reports failure by returning a malloc'd message, NULL on success; Rust frees it with
// ditbench_c10d_free_message. Tensors are tch's handles: tch's C_tensor is a
// `torch::Tensor *` (= `at::Tensor *`).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

// One process group: the rendezvous store and the backend that runs the collectives.
struct DitbenchDistGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

// A TCPStore served by rank 0 at host:port; every rank waits for all `size` ranks to
// join, for at most `timeout`.
c10::intrusive_ptr<c10d::Store> ditbench_c10d_make_store(
    const char* host, uint16_t port, int rank, int size, std::chrono::milliseconds timeout);

// A malloc'd copy of `what`, for Rust to read and free.
char* ditbench_c10d_message(const char* what) noexcept;

// Runs `body`; on a C++ exception returns its message (malloc'd), else NULL.
template <typename F>
char* ditbench_c10d_guard(F&& body) noexcept {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    // c10 messages carry a C++ backtrace in what(); the short form names the problem.
    return ditbench_c10d_message(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return ditbench_c10d_message(e.what());
  } catch (...) {
    return ditbench_c10d_message("unknown C++ exception");
  }
}
