// Every relative link in README.md and docs/*.md points at a file that exists (and, for a link
// into a Markdown page with #anchor, at one of its headings, slugged as GitHub does). Code blocks
// and inline code are skipped: `[](const at::Tensor& t)` is a lambda, not a link.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// The text outside fenced code blocks and inline code spans, line by line.
std::vector<std::string> prose_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  bool fenced = false;
  while (std::getline(in, line)) {
    const auto first = line.find_first_not_of(' ');
    if (first != std::string::npos && line.compare(first, 3, "```") == 0) {
      fenced = !fenced;
      lines.emplace_back();
      continue;
    }
    if (fenced) {
      lines.emplace_back();
      continue;
    }
    std::string prose;
    bool code = false;
    for (char c : line) {
      if (c == '`') {
        code = !code;
        continue;
      }
      if (!code) prose += c;
    }
    lines.push_back(prose);
  }
  return lines;
}

/// GitHub's heading anchor: lower case, punctuation other than '-' and '_' dropped, spaces to '-'.
std::string slug(const std::string& heading) {
  std::string out;
  for (unsigned char c : heading) {
    if (std::isalnum(c) || c == '-' || c == '_' || c >= 0x80) {
      out += static_cast<char>(std::tolower(c));
    } else if (c == ' ') {
      out += '-';
    }
  }
  return out;
}

std::set<std::string> anchors(const fs::path& markdown) {
  std::set<std::string> out;
  for (const std::string& line : prose_lines(read_file(markdown))) {
    if (line.empty() || line[0] != '#') continue;
    const auto text = line.find_first_not_of('#');
    if (text == std::string::npos) continue;
    out.insert(slug(line.substr(line.find_first_not_of(' ', text))));
  }
  return out;
}

struct Link {
  fs::path page;
  int line;
  std::string target;
};

std::vector<Link> relative_links(const fs::path& page) {
  static const std::regex link(R"(\]\(([^)\s]+)\))");
  std::vector<Link> out;
  const std::vector<std::string> lines = prose_lines(read_file(page));
  for (size_t i = 0; i < lines.size(); ++i) {
    for (std::sregex_iterator it(lines[i].begin(), lines[i].end(), link), end; it != end; ++it) {
      const std::string target = (*it)[1];
      if (target.rfind("http://", 0) == 0 || target.rfind("https://", 0) == 0 ||
          target.rfind("mailto:", 0) == 0) {
        continue;
      }
      out.push_back({page, static_cast<int>(i + 1), target});
    }
  }
  return out;
}

std::vector<fs::path> pages() {
  const fs::path root(FRUGAL_SOURCE_DIR);
  std::vector<fs::path> out{root / "README.md"};
  for (const auto& entry : fs::directory_iterator(root / "docs")) {
    if (entry.path().extension() == ".md") out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// Empty when the link resolves; otherwise what is wrong.
std::string check(const Link& link) {
  const auto hash = link.target.find('#');
  const std::string file = link.target.substr(0, hash);
  const std::string anchor = hash == std::string::npos ? "" : link.target.substr(hash + 1);
  const fs::path path = file.empty() ? link.page : link.page.parent_path() / file;
  if (!fs::exists(path)) return "no file " + path.lexically_normal().string();
  if (!anchor.empty() && path.extension() == ".md" && anchors(path).count(anchor) == 0) {
    return "no heading #" + anchor + " in " + path.filename().string();
  }
  return "";
}

TEST(DocsLinks, EveryRelativeLinkResolves) {
  int checked = 0;
  for (const fs::path& page : pages()) {
    for (const Link& link : relative_links(page)) {
      ++checked;
      const std::string problem = check(link);
      EXPECT_EQ(problem, "") << page.filename().string() << ":" << link.line << ": (" << link.target
                             << ")";
    }
  }
  EXPECT_GT(checked, 30) << "the pages should link to each other";
}

TEST(DocsLinks, TheCheckerFindsBrokenLinks) {
  const fs::path dir = fs::temp_directory_path() / "frugal_docs_links_test";
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream(dir / "a.md") << "# Top\n## Out-of-memory recovery, during training\n"
                                << "[ok](b.md) [bad](c.md) [anchor](#top) `[](x.md)`\n"
                                << "```\n[fenced](d.md)\n```\n[deep](a.md#nope)\n"
                                << "[slug](a.md#out-of-memory-recovery-during-training)\n";
    std::ofstream(dir / "b.md") << "b\n";
  }
  std::vector<std::string> problems;
  for (const Link& link : relative_links(dir / "a.md")) problems.push_back(check(link));
  ASSERT_EQ(problems.size(), 5u);  // the inline-code and fenced links are not links
  EXPECT_EQ(problems[0], "");
  EXPECT_NE(problems[1].find("no file"), std::string::npos);
  EXPECT_EQ(problems[2], "");
  EXPECT_EQ(problems[3], "no heading #nope in a.md");
  EXPECT_EQ(problems[4], "");
  fs::remove_all(dir);
}

}  // namespace
