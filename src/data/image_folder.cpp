#include "frugal/data/image_folder.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>

#include "frugal/error.h"

namespace frugal {
namespace fs = std::filesystem;

const std::vector<std::string>& default_image_extensions() {
  static const std::vector<std::string> extensions = {".jpg", ".jpeg", ".png",  ".ppm", ".bmp",
                                                      ".pgm", ".tif",  ".tiff", ".webp"};
  return extensions;
}

namespace {

std::string lower(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

bool has_extension(const std::string& name, const std::vector<std::string>& extensions) {
  const std::string low = lower(name);
  for (const std::string& ext : extensions) {
    if (low.size() >= ext.size() && low.compare(low.size() - ext.size(), ext.size(), ext) == 0) {
      return true;
    }
  }
  return false;
}

// is_dir() of os.scandir's entries: follows symbolic links, false on any error.
bool is_dir_following_links(const fs::directory_entry& entry) {
  std::error_code error;
  return entry.is_directory(error) && !error;
}

// os.walk(top, followlinks=True): every folder under `top` (itself first) with the names of its
// non-folder entries. Unreadable folders are skipped, as os.walk does without onerror. A folder
// that is its own ancestor (a symbolic-link cycle, where Python recurses until it fails) is not
// entered again; the same folder reached by two links is walked twice, as os.walk does.
void walk(const std::string& top,
          std::vector<std::pair<std::string, std::vector<std::string>>>* out,
          std::set<std::string>* visited, int depth) {
  std::error_code error;
  const fs::path canonical = fs::canonical(top, error);
  if (error || depth > 256 || !visited->insert(canonical.string()).second) return;
  fs::directory_iterator it(top, error);
  if (error) return;
  std::vector<std::string> dirs;
  std::vector<std::string> files;
  for (const fs::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    (is_dir_following_links(entry) ? dirs : files).push_back(name);
  }
  out->emplace_back(top, std::move(files));
  for (const std::string& dir : dirs) walk(top + "/" + dir, out, visited, depth + 1);
  visited->erase(canonical.string());  // `visited` holds the ancestors only
}

}  // namespace

ImageFolder::ImageFolder(std::string root, std::vector<std::string> extensions)
    : root_(std::move(root)) {
  FRUGAL_CHECK(!extensions.empty(), "ImageFolder ", root_, ": the extension list is empty");
  for (std::string& ext : extensions) ext = lower(ext);
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
  std::error_code error;
  FRUGAL_CHECK(fs::is_directory(root_, error), "ImageFolder: '", root_,
               "' is not a folder (expected one sub-folder per class)");
  fs::directory_iterator it(root_, error);
  FRUGAL_CHECK(!error, "ImageFolder: cannot list '", root_, "': ", error.message());
  for (const fs::directory_entry& entry : it) {
    if (is_dir_following_links(entry)) classes_.push_back(entry.path().filename().string());
  }
  FRUGAL_CHECK(!classes_.empty(), "ImageFolder: no class folder in '", root_,
               "' (expected one sub-folder per class)");
  std::sort(classes_.begin(), classes_.end());  // byte order = code-point order for UTF-8

  std::vector<std::string> empty;
  for (size_t label = 0; label < classes_.size(); ++label) {
    std::vector<std::pair<std::string, std::vector<std::string>>> folders;
    std::set<std::string> visited;
    walk(root_ + "/" + classes_[label], &folders, &visited, 0);
    std::sort(folders.begin(), folders.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    const size_t before = samples_.size();
    for (auto& [folder, files] : folders) {
      std::sort(files.begin(), files.end());
      for (const std::string& file : files) {
        if (has_extension(file, extensions)) {
          samples_.push_back({folder + "/" + file, static_cast<int64_t>(label)});
        }
      }
    }
    if (samples_.size() == before) empty.push_back("'" + classes_[label] + "'");
  }
  FRUGAL_CHECK(empty.empty(), "ImageFolder ", root_, ": no image file in the class folder(s) ",
               fmt::format("{}", fmt::join(empty, ", ")),
               " (an empty class is an error, as in torchvision; extensions: ",
               fmt::format("{}", fmt::join(extensions, " ")), ")");
}

namespace {

// Splits one CSV record (RFC 4180). Returns false on an unterminated quote.
bool split_csv(const std::string& line, std::vector<std::string>* cells) {
  cells->clear();
  std::string cell;
  bool quoted = false;
  bool was_quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < line.size() && line[i + 1] == '"') {
          cell += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        cell += c;
      }
    } else if (c == '"' && cell.empty() && !was_quoted) {
      quoted = was_quoted = true;
    } else if (c == ',') {
      cells->push_back(std::move(cell));
      cell.clear();
      was_quoted = false;
    } else {
      cell += c;
    }
  }
  cells->push_back(std::move(cell));
  return !quoted;
}

}  // namespace

std::vector<ImageSample> read_image_list(const std::string& list_path,
                                         const std::string& base_dir) {
  std::ifstream in(list_path, std::ios::binary);
  FRUGAL_CHECK(in.good(), "image list '", list_path, "': cannot open it");
  std::string base = base_dir;
  if (base.empty()) {
    base = fs::path(list_path).parent_path().string();
    if (base.empty()) base = ".";
  }
  std::vector<ImageSample> samples;
  std::string line;
  std::vector<std::string> cells;
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    FRUGAL_CHECK(split_csv(line, &cells), "image list '", list_path, "' line ", line_number,
                 ": unterminated quote");
    FRUGAL_CHECK(cells.size() == 2, "image list '", list_path, "' line ", line_number,
                 ": expected 2 cells 'path,label', got ", cells.size());
    if (samples.empty() && line_number == 1 && cells[0] == "path" && cells[1] == "label") continue;
    FRUGAL_CHECK(!cells[0].empty(), "image list '", list_path, "' line ", line_number,
                 ": the path is empty");
    size_t used = 0;
    long long label = -1;
    try {
      label = std::stoll(cells[1], &used);
    } catch (const std::exception&) {
      used = 0;
    }
    FRUGAL_CHECK(used == cells[1].size() && used > 0 && label >= 0, "image list '", list_path,
                 "' line ", line_number, ": the label must be an integer >= 0, got '", cells[1],
                 "'");
    const fs::path path(cells[0]);
    samples.push_back({path.is_absolute() ? cells[0] : base + "/" + cells[0], label});
  }
  FRUGAL_CHECK(in.eof(), "image list '", list_path, "': read error");
  FRUGAL_CHECK(!samples.empty(), "image list '", list_path, "': no sample in it");
  return samples;
}

}  // namespace frugal
