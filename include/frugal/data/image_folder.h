// Image sources by file: a folder of class sub-folders (torchvision's ImageFolder conventions,
// exactly) and a list file (CSV `path,label`).
//
//   frugal::ImageFolder train("data/train");
//   train.classes();   // sorted sub-folder names; index = class label
//   train.samples();   // {path, label}, in torchvision's order
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace frugal {

/// One sample of an image source: the file and its class index.
struct ImageSample {
  std::string path;
  int64_t label = 0;
};

/// torchvision's IMG_EXTENSIONS: .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp (checked
/// case-insensitively). Files are decoded by their magic bytes, whatever their extension.
const std::vector<std::string>& default_image_extensions();

/// A folder whose sub-folders are the classes, as torchvision.datasets.ImageFolder (0.14)
/// reads it:
/// - classes: every sub-folder of `root` (symbolic links followed; hidden ones included), sorted
///   by code point (byte order of the UTF-8 names); the class index is the position;
/// - samples: per class in that order, the folder walked recursively (links followed) as
///   `sorted(os.walk(dir))` does — folders in byte order of their whole path, then the file names
///   in each folder sorted — keeping the files whose lower-cased name ends with an extension
///   (hidden files included);
/// - no class folder, or a class folder without a matching file, is an error naming them.
class ImageFolder {
 public:
  explicit ImageFolder(std::string root,
                       std::vector<std::string> extensions = default_image_extensions());

  const std::string& root() const { return root_; }
  const std::vector<std::string>& classes() const { return classes_; }
  const std::vector<ImageSample>& samples() const { return samples_; }
  int64_t size() const { return static_cast<int64_t>(samples_.size()); }

 private:
  std::string root_;
  std::vector<std::string> classes_;
  std::vector<ImageSample> samples_;
};

/// Reads a list file: CSV (RFC 4180 quoting) with one `path,label` row per sample, in the file's
/// order; a first row `path,label` is a header and skipped; relative paths are taken relative to
/// `base_dir` (default: the list file's folder). Labels must be integers >= 0. A malformed row is
/// an error naming the file and line.
std::vector<ImageSample> read_image_list(const std::string& list_path,
                                         const std::string& base_dir = "");

}  // namespace frugal
