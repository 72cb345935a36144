#include "loggers/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace frugal::svg {

namespace {

// Layout in viewBox units; the SVG scales to its container.
constexpr double kWidth = 640, kHeight = 320;
// The title, then a band for the legend (so it never hides a line), then the plot.
constexpr double kLeft = 64, kRight = 16, kTop = 44, kBottom = 48;
constexpr double kPlotW = kWidth - kLeft - kRight, kPlotH = kHeight - kTop - kBottom;

// Colour-blind-safe palette (Okabe-Ito).
const char* const kColours[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                "#E69F00", "#56B4E9", "#F0E442", "#000000"};

std::string colour(size_t i) { return kColours[i % (sizeof(kColours) / sizeof(kColours[0]))]; }

std::string num(double v) {
  // Short, locale-free text; integers without a fraction.
  if (std::abs(v) < 1e-12) return "0";
  if (std::abs(v) >= 1e5 || std::abs(v) < 1e-3) return fmt::format("{:.3g}", v);
  return fmt::format("{:.6g}", v);
}

struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    if (!std::isfinite(v)) return;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  void settle() {
    if (!std::isfinite(lo)) lo = 0, hi = 1;
    if (hi - lo < 1e-12) {
      const double pad = std::abs(lo) > 0 ? std::abs(lo) * 0.1 : 1.0;
      lo -= pad;
      hi += pad;
    }
  }
};

struct Frame {
  Range x, y;
  bool log_y = false;
  double tx(double v) const { return kLeft + (v - x.lo) / (x.hi - x.lo) * kPlotW; }
  double ty(double v) const {
    const double f =
        log_y ? (std::log10(v) - std::log10(y.lo)) / (std::log10(y.hi) - std::log10(y.lo))
              : (v - y.lo) / (y.hi - y.lo);
    return kTop + (1 - f) * kPlotH;
  }
};

// `pad`: a margin of that share of the range on each side, so that dots (scatter charts) at the
// extremes are drawn whole inside the plot.
Frame frame_of(const Chart& chart, double pad = 0.0) {
  Frame f;
  f.log_y = chart.log_y;
  for (const auto& s : chart.series) {
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(y) || (f.log_y && y <= 0)) continue;
      f.x.add(x);
      f.y.add(y);
    }
  }
  for (const auto& l : chart.lines) (l.vertical ? f.x : f.y).add(l.value);
  f.x.settle();
  f.y.settle();
  for (Range* r : {&f.x, &f.y}) {
    if (r == &f.y && f.log_y) continue;
    const double margin = (r->hi - r->lo) * pad;
    r->lo -= margin;
    r->hi += margin;
  }
  if (!f.log_y) {
    const auto ty = nice_ticks(f.y.lo, f.y.hi);
    f.y.lo = std::min(f.y.lo, ty.front());
    f.y.hi = std::max(f.y.hi, ty.back());
  }
  return f;
}

std::string open_svg(const Chart& chart, const std::string& kind) {
  return fmt::format(
      "<svg class=\"chart {}\" viewBox=\"0 0 {} {}\" "
      "width=\"100%\" role=\"img\" aria-label=\"{}\" data-title=\"{}\">\n"
      "<title>{}</title>\n"
      "<text class=\"chart-title\" x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"15\" "
      "font-weight=\"bold\">{}</text>\n",
      kind, kWidth, kHeight, xml_escape(chart.title), xml_escape(chart.title),
      xml_escape(chart.title), kLeft + kPlotW / 2, xml_escape(chart.title));
}

std::string axes(const Chart& chart, const Frame& f) {
  std::string out = fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>\n", kLeft,
      kTop, kPlotW, kPlotH);
  for (double t : nice_ticks(f.x.lo, f.x.hi, 5, chart.integer_x ? 1.0 : 0.0)) {
    if (t < f.x.lo - 1e-9 || t > f.x.hi + 1e-9) continue;
    out += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#ddd\"/>"
        "<text class=\"tick\" x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\" font-size=\"11\">{4}"
        "</text>\n",
        f.tx(t), kTop, kTop + kPlotH, kTop + kPlotH + 14, num(t));
  }
  std::vector<double> yt;
  if (f.log_y) {
    for (double p = std::floor(std::log10(f.y.lo)); p <= std::ceil(std::log10(f.y.hi)); ++p) {
      yt.push_back(std::pow(10.0, p));
    }
  } else {
    yt = nice_ticks(f.y.lo, f.y.hi);
  }
  for (double t : yt) {
    if (t < f.y.lo - 1e-12 || t > f.y.hi + 1e-12) continue;
    out += fmt::format(
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#ddd\"/>"
        "<text class=\"tick\" x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\" font-size=\"11\">{5}"
        "</text>\n",
        kLeft, f.ty(t), kLeft + kPlotW, kLeft - 4, f.ty(t) + 4, num(t));
  }
  out += fmt::format(
      "<text class=\"axis-label x-label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" "
      "font-size=\"12\">{}</text>\n"
      "<text class=\"axis-label y-label\" x=\"14\" y=\"{}\" text-anchor=\"middle\" "
      "font-size=\"12\" "
      "transform=\"rotate(-90 14 {})\">{}</text>\n",
      kLeft + kPlotW / 2, kHeight - 8, xml_escape(chart.x_label), kTop + kPlotH / 2,
      kTop + kPlotH / 2, xml_escape(chart.y_label));
  return out;
}

std::string ref_lines(const Chart& chart, const Frame& f) {
  std::string out;
  for (const auto& l : chart.lines) {
    if (l.vertical) {
      const bool right_half = f.tx(l.value) > kLeft + kPlotW * 0.75;
      out += fmt::format(
          "<g class=\"ref vertical\" data-label=\"{0}\"><line x1=\"{1:.1f}\" y1=\"{2}\" "
          "x2=\"{1:.1f}\" y2=\"{3}\" stroke=\"#555\" stroke-dasharray=\"4 3\"/>"
          "<text x=\"{4:.1f}\" y=\"{5}\" text-anchor=\"{6}\" font-size=\"10\" "
          "fill=\"#555\">{0}</text></g>\n",
          xml_escape(l.label), f.tx(l.value), kTop, kTop + kPlotH,
          // Near the right edge the label goes to the line's left, inside the plot.
          right_half ? f.tx(l.value) - 3 : f.tx(l.value) + 3, kTop + 10,
          right_half ? "end" : "start");
    } else {
      out += fmt::format(
          "<g class=\"ref horizontal\" data-label=\"{0}\"><line x1=\"{1}\" y1=\"{2:.1f}\" "
          "x2=\"{3}\" y2=\"{2:.1f}\" stroke=\"#C00\" stroke-dasharray=\"6 3\"/>"
          "<text x=\"{4}\" y=\"{5:.1f}\" text-anchor=\"end\" font-size=\"10\" fill=\"#C00\">{0}"
          "</text></g>\n",
          xml_escape(l.label), kLeft, f.ty(l.value), kLeft + kPlotW, kLeft + kPlotW - 3,
          f.ty(l.value) - 3);
    }
  }
  return out;
}

std::string legend(const Chart& chart) {
  std::string out = "<g class=\"legend\">";
  double x = kLeft;
  for (size_t i = 0; i < chart.series.size(); ++i) {
    out += fmt::format(
        "<rect x=\"{0:.1f}\" y=\"{1}\" width=\"10\" height=\"10\" fill=\"{2}\"/><text "
        "x=\"{3:.1f}\" "
        "y=\"{4}\" font-size=\"11\">{5}</text>",
        x, kTop - 14, colour(i), x + 13, kTop - 5, xml_escape(chart.series[i].name));
    x += 24 + 6.2 * static_cast<double>(chart.series[i].name.size());
  }
  return out + "</g>\n";
}

}  // namespace

std::string xml_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::vector<double> nice_ticks(double lo, double hi, int count, double min_step) {
  if (!(hi > lo)) return {lo};
  const double raw = std::max((hi - lo) / std::max(count, 1), min_step);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  for (double t = std::floor(lo / step) * step; t <= hi + step * 0.5 && ticks.size() < 50;
       t += step) {
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
    if (t >= hi) break;
  }
  return ticks;
}

std::string line_chart(const Chart& chart) {
  const Frame f = frame_of(chart);
  std::string out = open_svg(chart, "line") + axes(chart, f) + ref_lines(chart, f);
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const auto& s = chart.series[i];
    std::string pts;
    size_t n = 0;
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(y) || (f.log_y && y <= 0)) continue;
      pts += fmt::format("{}{:.1f},{:.1f}", n ? " " : "", f.tx(x), f.ty(y));
      ++n;
    }
    out += fmt::format(
        "<polyline class=\"series\" data-series=\"{}\" data-points=\"{}\" fill=\"none\" "
        "stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n",
        xml_escape(s.name), n, colour(i), pts);
  }
  return out + legend(chart) + "</svg>\n";
}

std::string scatter_chart(const Chart& chart) {
  const Frame f = frame_of(chart, 0.06);
  std::string out = open_svg(chart, "scatter") + axes(chart, f) + ref_lines(chart, f);
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const auto& s = chart.series[i];
    std::string dots;
    size_t n = 0;
    for (size_t k = 0; k < s.points.size(); ++k) {
      const auto [x, y] = s.points[k];
      if (!std::isfinite(y) || !std::isfinite(x)) continue;
      dots += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"5\" fill=\"{}\"/>", f.tx(x),
                          f.ty(y), colour(i));
      if (i < chart.point_labels.size() && k < chart.point_labels[i].size()) {
        dots += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\">{}</text>",
                            f.tx(x) + 7, f.ty(y) + 3, xml_escape(chart.point_labels[i][k]));
      }
      ++n;
    }
    out += fmt::format("<g class=\"series\" data-series=\"{}\" data-points=\"{}\">{}</g>\n",
                       xml_escape(s.name), n, dots);
  }
  return out + legend(chart) + "</svg>\n";
}

}  // namespace frugal::svg
