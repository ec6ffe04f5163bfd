// The NCCL backend, compiled only where NCCL's and CUDA's headers exist (build.rs).
// ProcessGroupNCCL.hpp declares its class only under this macro.
#define USE_C10D_NCCL
#include "bridge.h"

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

extern "C" char* ditbench_c10d_init_nccl(const char* host, uint16_t port, int rank, int size,
                                         int64_t timeout_ms, int device_index,
                                         DitbenchDistGroup** out) {
  return ditbench_c10d_guard([&] {
    const std::chrono::milliseconds timeout(timeout_ms);
    auto store = ditbench_c10d_make_store(host, port, rank, size, timeout);
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    auto backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
    // Binding the device creates the communicator now (as torch.distributed does with
    // device_id), so a broken setup fails at init, not at the first gradient.
    const at::Device device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index));
    backend->setBoundDeviceId(device);
    backend->eagerConnectSingleDevice(device);
    *out = new DitbenchDistGroup{store, backend, timeout};
  });
}
