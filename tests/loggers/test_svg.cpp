// The run report's SVG writer: one test per chart type, plus the axis ticks.
#include <gtest/gtest.h>

#include <cmath>
#include <regex>
#include <sstream>
#include <string>

#include "loggers/svg.h"

namespace svg = frugal::svg;

namespace {

int count(const std::string& text, const std::string& part) {
  int n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

// The "x,y" pairs of the polyline of `series`.
std::vector<std::pair<double, double>> polyline_points(const std::string& out,
                                                       const std::string& series) {
  const std::regex re("data-series=\"" + series +
                      "\" data-points=\"(\\d+)\"[^>]*points=\"([^\"]*)\"");
  std::smatch m;
  if (!std::regex_search(out, m, re)) return {};
  std::vector<std::pair<double, double>> pts;
  std::istringstream in(m[2].str());
  for (std::string pair; in >> pair;) {
    const auto comma = pair.find(',');
    pts.emplace_back(std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1)));
  }
  EXPECT_EQ(static_cast<size_t>(std::stoi(m[1].str())), pts.size());
  return pts;
}

}  // namespace

TEST(SvgTicks, NiceStepsCoverTheRange) {
  EXPECT_EQ(svg::nice_ticks(0, 1, 5),
            (std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1}));
  const auto t = svg::nice_ticks(3, 97, 5);
  EXPECT_EQ(t.front(), 0);
  EXPECT_EQ(t.back(), 100);
  EXPECT_EQ(t[1] - t[0], 20);
  // Epochs 0..1: integer ticks only.
  EXPECT_EQ(svg::nice_ticks(0, 1, 5, 1.0), (std::vector<double>{0, 1}));
  EXPECT_EQ(svg::nice_ticks(0, 12, 5, 1.0), (std::vector<double>{0, 5, 10}));
}

TEST(SvgLineChart, OnePolylinePerSeriesScaledIntoThePlot) {
  svg::Chart c;
  c.title = "Loss <by> step";
  c.x_label = "step";
  c.y_label = "loss";
  c.series = {{"train/loss", {{0, 1.0}, {10, 0.5}, {20, NAN}, {30, 0.0}}},
              {"val/loss", {{10, 0.8}, {30, 0.6}}}};
  c.lines = {{"checkpoint", 10, true}, {"limit", 0.9, false}};
  const std::string out = svg::line_chart(c);
  EXPECT_EQ(count(out, "<polyline"), 2);
  EXPECT_EQ(out.rfind("<svg class=\"chart line\" viewBox=\"0 0 640 320\" width=\"100%\"", 0), 0u);
  EXPECT_NE(out.find("Loss &lt;by&gt; step"), std::string::npos) << "the title is escaped";
  EXPECT_NE(out.find("class=\"axis-label x-label\""), std::string::npos);
  EXPECT_NE(out.find(">step</text>"), std::string::npos);
  EXPECT_NE(out.find(">loss</text>"), std::string::npos);
  EXPECT_NE(out.find("data-label=\"checkpoint\""), std::string::npos);
  EXPECT_NE(out.find("data-label=\"limit\""), std::string::npos);
  // The NaN point is left out; x runs 0..30 over the plot's 64..624, y 0..1 over 272..44.
  const auto train = polyline_points(out, "train/loss");
  ASSERT_EQ(train.size(), 3u);
  EXPECT_DOUBLE_EQ(train[0].first, 64.0);
  EXPECT_DOUBLE_EQ(train[2].first, 624.0);
  EXPECT_DOUBLE_EQ(train[0].second, 44.0);
  EXPECT_DOUBLE_EQ(train[2].second, 272.0);
  EXPECT_NEAR(train[1].second, 158.0, 0.05);
  EXPECT_EQ(polyline_points(out, "val/loss").size(), 2u);
  // The legend sits in the band between the title and the plot (y < 44), not over the lines.
  EXPECT_NE(out.find("<g class=\"legend\"><rect x=\"64.0\" y=\"30\""), std::string::npos);
  EXPECT_EQ(out.find("http"), std::string::npos) << "no reference to anything outside";
  EXPECT_EQ(out.find("<script"), std::string::npos);
}

TEST(SvgScatterChart, OneDotPerPointWithLabels) {
  svg::Chart c;
  c.title = "Accuracy vs peak memory";
  c.x_label = "peak memory (MB)";
  c.y_label = "accuracy";
  c.series = {{"fits", {{100, 0.8}, {200, 0.9}}}, {"over budget", {{400, 0.95}}}};
  c.point_labels = {{"a", "b"}, {"c"}};
  c.lines = {{"budget", 300, true}};
  const std::string out = svg::scatter_chart(c);
  EXPECT_EQ(count(out, "<circle"), 3);
  EXPECT_NE(out.find("data-series=\"fits\" data-points=\"2\""), std::string::npos);
  EXPECT_NE(out.find("data-series=\"over budget\" data-points=\"1\""), std::string::npos);
  EXPECT_NE(out.find(">peak memory (MB)</text>"), std::string::npos);
  EXPECT_NE(out.find(">c</text>"), std::string::npos);
  EXPECT_NE(out.find("data-label=\"budget\""), std::string::npos);
  // Every dot (radius 5) whole inside the plot (x 64..624, y 44..272), the extremes included.
  const std::regex dot("<circle cx=\"([0-9.]+)\" cy=\"([0-9.]+)\" r=\"5\"");
  int dots = 0;
  for (std::sregex_iterator it(out.begin(), out.end(), dot), end; it != end; ++it, ++dots) {
    const double x = std::stod((*it)[1].str()), y = std::stod((*it)[2].str());
    EXPECT_TRUE(x >= 64 + 5 && x <= 624 - 5) << x;
    EXPECT_TRUE(y >= 44 + 5 && y <= 272 - 5) << y;
  }
  EXPECT_EQ(dots, 3);
}
