// frugal-report: makes the run report (report.html, docs/logging.md) of an existing run from the
// files its CSVLogger wrote, e.g. a run from before the Trainer wrote reports, or one that crashed.
//
//   frugal-report runs/frugal_logs/version_3          # writes
//   runs/frugal_logs/version_3/report.html frugal-report --title "resnet, lr 3e-3" DIR
//
// Reads DIR/metrics.csv (required) and DIR/hparams.yaml (optional); exits 1 with a message naming
// the file when one is missing or malformed, and then writes nothing.
#include <frugal/loggers/report.h>

#include <CLI/CLI.hpp>
#include <exception>
#include <filesystem>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  std::string dir;
  std::string title;
  CLI::App app{"Write report.html (plots and tables, one self-contained file) for a run's folder"};
  app.add_option("dir", dir, "a CSVLogger folder: holds metrics.csv (and hparams.yaml)")
      ->required();
  app.add_option("--title", title, "the page's title (default: \"frugal run DIR\")");
  CLI11_PARSE(app, argc, argv);
  try {
    frugal::RunReportInfo info;
    info.title = title.empty() ? "frugal run " + dir : title;
    const std::string path = frugal::write_run_report(dir, info);
    std::cout << "wrote " << path << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "frugal-report: error: " << e.what() << "\n";
    return 1;
  }
}
