// A small SVG chart writer for the run report (private): line charts and scatter charts with
// labelled axes, reference lines and marks. Output is plain inline SVG (no script, no external
// reference), scaled to its container (viewBox, width 100%), so it reads on a phone and prints.
//
// Every series is one <polyline> (line chart) or a <g> of <circle>s (scatter chart) carrying
// data-series="<name>" and data-points="<count>", so a test (or a reader) can check the DOM.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace frugal::svg {

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y); NaN y values are left out
};

/// A reference line across the plot: horizontal at `value` (a threshold, a budget) or vertical at
/// `value` of x (a checkpoint, a stop).
struct RefLine {
  std::string label;
  double value = 0;
  bool vertical = false;
};

struct Chart {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<Series> series;
  std::vector<RefLine> lines;
  /// Scatter charts label every point (e.g. a candidate's name), in Series order.
  std::vector<std::vector<std::string>> point_labels;
  bool log_y = false;
  /// x takes whole numbers only (epochs): ticks at integers.
  bool integer_x = false;
};

/// Line chart: each series a polyline with a legend entry.
std::string line_chart(const Chart& chart);
/// Scatter chart: each series a set of dots, optionally labelled.
std::string scatter_chart(const Chart& chart);

/// "nice" axis ticks covering [lo, hi]: 1, 2 or 5 times a power of ten, about `count` of them,
/// at least `min_step` apart (1: integers only).
std::vector<double> nice_ticks(double lo, double hi, int count = 5, double min_step = 0);
/// Text for XML (&, <, >, " escaped).
std::string xml_escape(const std::string& text);

}  // namespace frugal::svg
