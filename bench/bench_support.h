// Small helpers shared by the benchmarks in bench/.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace frugal::bench {

/// The median (the mean of the middle two for an even count); NaN when empty.
inline double median(std::vector<double> values) {
  if (values.empty()) return std::nan("");
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

}  // namespace frugal::bench
