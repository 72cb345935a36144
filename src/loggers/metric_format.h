// How metric values read in human-facing text (console logger, progress bar): one rule, one place.
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <map>
#include <string>

namespace frugal::detail {

/// 4 decimals for ordinary magnitudes (0.9123, 12.5000), 4 significant digits otherwise (1e-05,
/// 3.142e+07), so a learning rate of 1e-5 does not read as 0.0000.
inline std::string format_metric_value(double value) {
  const double magnitude = std::fabs(value);
  if (value == 0.0 || (magnitude >= 1e-3 && magnitude < 1e6) || !std::isfinite(value)) {
    return fmt::format("{:.4f}", value);
  }
  return fmt::format("{:.4g}", value);
}

/// `a=0.1000 b=2.0000`, in the map's (name) order.
inline std::string format_metrics(const std::map<std::string, double>& metrics) {
  std::string text;
  for (const auto& [name, value] : metrics) {
    if (!text.empty()) text += ' ';
    text += name;
    text += '=';
    text += format_metric_value(value);
  }
  return text;
}

}  // namespace frugal::detail
