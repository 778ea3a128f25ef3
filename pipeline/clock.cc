#include "pipeline/clock.h"

#include <fstream>
#include <string>

namespace tocsin {

TscScale measure_tsc() {
  TscScale s;
#if defined(__x86_64__)
  // The kernel uses the counter for its own clocks only when it is invariant
  // and synchronised; otherwise (another clocksource, e.g. a VM's kvm-clock
  // without a stable counter) stay on steady_clock.
  std::string source;
  std::ifstream("/sys/devices/system/clocksource/clocksource0/current_clocksource") >> source;
  if (source != "tsc") return s;
  using std::chrono::steady_clock;
  const auto t0 = steady_clock::now();
  const uint64_t c0 = __builtin_ia32_rdtsc();
  auto t1 = t0;
  while (t1 - t0 < std::chrono::milliseconds(2)) t1 = steady_clock::now();
  const uint64_t c1 = __builtin_ia32_rdtsc();
  const double ns = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
  if (c1 > c0) {
    s.ns_per_tick = ns / static_cast<double>(c1 - c0);
    s.base = c0;
  }
#endif
  return s;
}

}  // namespace tocsin
