// parallel_for for the CPU kernels: the aot calling convention hands a kernel no thread pool, and
// MindSpore runs it on one of its own threads, so a kernel left alone uses one core of several.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

namespace mindscience_kernels {

// Threads per kernel call: $MINDSCIENCE_DIFFUSER_KERNEL_THREADS when set (read at every call, so
// a process can change it between calls), else the hardware threads, at most 8.
inline int64_t kernel_threads() {
  if (const char *setting = std::getenv("MINDSCIENCE_DIFFUSER_KERNEL_THREADS")) {
    const long value = std::strtol(setting, nullptr, 10);
    if (value >= 1) return value;
  }
  return std::min<int64_t>(8, std::max(1u, std::thread::hardware_concurrency()));
}

// Runs body(begin, end) over [0, n) split into contiguous chunks, one per kernel thread, the
// first chunk on the calling thread. Chunks of fewer than min_per_thread items are not worth a
// thread start (~20 us): small problems run inline.
template <class Body>
void parallel_for(int64_t n, int64_t min_per_thread, Body body) {
  const int64_t threads = std::max<int64_t>(1, std::min(kernel_threads(), n / std::max<int64_t>(1, min_per_thread)));
  if (threads == 1) {
    body(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> workers;
  const int64_t chunk = (n + threads - 1) / threads;
  for (int64_t begin = chunk; begin < n; begin += chunk) {
    workers.emplace_back(body, begin, std::min(n, begin + chunk));
  }
  body(int64_t{0}, std::min(n, chunk));
  for (auto &worker : workers) worker.join();
}

}  // namespace mindscience_kernels
