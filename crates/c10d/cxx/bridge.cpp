// c10d rendezvous (TCPStore), the Gloo backend and the collectives ditbench needs.
// NCCL lives in nccl.cpp, compiled only where its headers exist.
// ProcessGroupGloo.hpp declares its class only under this macro.
#define USE_C10D_GLOO
#include "bridge.h"

#include <cstdlib>
#include <cstring>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

char* ditbench_c10d_message(const char* what) noexcept {
  return strdup(what);
}

c10::intrusive_ptr<c10d::Store> ditbench_c10d_make_store(
    const char* host, uint16_t port, int rank, int size, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions opts;
  opts.port = port;
  opts.isServer = rank == 0;
  opts.numWorkers = size;
  opts.waitWorkers = true;
  opts.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(host, opts);
}

// Waits for `work` for at most the group's timeout, so a stalled peer cannot hang us.
static void wait(const DitbenchDistGroup& g, const c10::intrusive_ptr<c10d::Work>& work) {
  try {
    work->wait(g.timeout);
  } catch (...) {
    // c10d's own words for this case are only "Operation timed out!".
    if (!work->isCompleted()) {
      throw std::runtime_error("timed out after " + std::to_string(g.timeout.count()) +
                               " ms waiting for the other ranks (one is stalled or gone)");
    }
    throw;
  }
}

extern "C" {

void ditbench_c10d_free_message(char* message) {
  free(message);
}

char* ditbench_c10d_init_gloo(const char* host, uint16_t port, int rank, int size,
                              int64_t timeout_ms, DitbenchDistGroup** out) {
  return ditbench_c10d_guard([&] {
    const std::chrono::milliseconds timeout(timeout_ms);
    auto store = ditbench_c10d_make_store(host, port, rank, size, timeout);
    // create_default picks the network devices as torch.distributed does
    // (GLOO_SOCKET_IFNAME, else this host's resolved address, else loopback).
    auto options = c10d::ProcessGroupGloo::Options::create_default(timeout);
    auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
    *out = new DitbenchDistGroup{store, backend, timeout};
  });
}

char* ditbench_c10d_all_reduce_sum(DitbenchDistGroup* g, at::Tensor* tensor) {
  return ditbench_c10d_guard([&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = g->timeout;
    wait(*g, g->backend->allreduce(tensors, opts));
  });
}

char* ditbench_c10d_broadcast(DitbenchDistGroup* g, at::Tensor* tensor, int root) {
  return ditbench_c10d_guard([&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = g->timeout;
    wait(*g, g->backend->broadcast(tensors, opts));
  });
}

char* ditbench_c10d_barrier(DitbenchDistGroup* g) {
  return ditbench_c10d_guard([&] {
    c10d::BarrierOptions opts;
    opts.timeout = g->timeout;
    wait(*g, g->backend->barrier(opts));
  });
}

void ditbench_c10d_free(DitbenchDistGroup* g) {
  // shutdown() lets NCCL tear its communicators down in order (a no-op for Gloo);
  // a failure there must not escape a destructor path.
  char* message = ditbench_c10d_guard([&] { g->backend->shutdown(); });
  free(message);
  delete g;
}

}  // extern "C"
