// Python as the test oracle: Debian's /usr/bin/python3 with PIL, numpy, torch and torchvision
// writes the reference files a test compares with. What the image and transform tests share.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "test_support.h"

namespace frugal::testing {

/// The whole file, as bytes ("" when it cannot be read).
inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// True when /usr/bin/python3 runs `code` without error (e.g. "import PIL, numpy").
inline bool python_can(const std::string& code) {
  return std::system(("/usr/bin/python3 -c " + shell_quote(code) + " >/dev/null 2>&1").c_str()) ==
         0;
}

/// Writes `script` into a fresh temp_dir(name) and runs it with that folder (or its sub-folder
/// `out`) as argv[1]; returns the folder passed. A failing script is a test failure that shows
/// its stderr.
inline std::string run_python_script(const std::string& name, const char* script,
                                     const std::string& out = "") {
  const std::string dir = temp_dir(name);
  const std::string target = out.empty() ? dir : dir + "/" + out;
  std::ofstream(dir + "/script.py") << script;
  const std::string cmd = "/usr/bin/python3 " + shell_quote(dir + "/script.py") + " " +
                          shell_quote(target) + " 2>" + shell_quote(dir + "/py.err");
  if (std::system(cmd.c_str()) != 0) {
    ADD_FAILURE() << name << ": the Python oracle failed:\n" << slurp(dir + "/py.err");
  }
  return target;
}

}  // namespace frugal::testing
