// Small helpers shared by the benchmarks in bench/.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <utility>
#include <vector>

namespace frugal::bench {

/// The median (the mean of the middle two for an even count); NaN when empty.
inline double median(std::vector<double> values) {
  if (values.empty()) return std::nan("");
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

/// A distribution-free confidence interval for the median: the order statistics x(j) and
/// x(n + 1 - j) with the largest j for which Binomial(n, 1/2) gives them at least `level`
/// coverage. NaNs when n < 6 (too few values for 95 %: the interval would be the whole range).
inline std::pair<double, double> median_interval(std::vector<double> values, double level = 0.95) {
  const size_t n = values.size();
  const double nan = std::nan("");
  std::sort(values.begin(), values.end());
  // P(X < j) for X ~ Binomial(n, 1/2): the chance that the median lies below x(j).
  auto below = [n](size_t j) {
    double p = 0, term = std::pow(0.5, static_cast<double>(n));  // C(n, 0) / 2^n
    for (size_t i = 0; i < j; ++i) {
      p += term;
      term = term * static_cast<double>(n - i) / static_cast<double>(i + 1);
    }
    return p;
  };
  size_t best = 0;
  for (size_t j = 1; 2 * j <= n; ++j) {
    if (1.0 - 2.0 * below(j) >= level) best = j;
  }
  if (best == 0) return {nan, nan};
  return {values[best - 1], values[n - best]};
}

}  // namespace frugal::bench
