// A torch-free writer of ONNX ModelProto files (private). It is the only code that includes the
// protobuf-generated onnx.pb.h, and it is compiled without LibTorch's include directories: PyPI's
// LibTorch ships its own, older protobuf headers (3.13) in torch/include, which must not mix with
// the protobuf that protoc and the linked runtime come from (Debian's 3.21).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace frugal::deploy::proto {

using AttributeValue =
    std::variant<int64_t, float, std::vector<int64_t>, std::vector<float>, std::string>;

struct Attribute {
  std::string name;
  AttributeValue value;
};

enum class DataType { kFloat, kInt64 };

class ModelWriter {
 public:
  /// A model with one graph, the default ONNX domain at `opset`, IR version `ir_version`.
  ModelWriter(int64_t opset, int64_t ir_version, const std::string& graph_name,
              const std::string& producer);
  ~ModelWriter();
  ModelWriter(const ModelWriter&) = delete;
  ModelWriter& operator=(const ModelWriter&) = delete;

  void add_node(const std::string& name, const std::string& op_type,
                const std::vector<std::string>& inputs, const std::vector<std::string>& outputs,
                const std::vector<Attribute>& attributes);
  /// `bytes` little-endian, C order (raw_data).
  void add_initializer(const std::string& name, DataType type, const std::vector<int64_t>& dims,
                       const void* data, size_t bytes);
  /// A float tensor graph input / output; a dimension < 0 is the symbolic `dim_param`.
  void add_input(const std::string& name, const std::vector<int64_t>& dims,
                 const std::string& dim_param);
  void add_output(const std::string& name, const std::vector<int64_t>& dims,
                  const std::string& dim_param);
  /// The serialized ModelProto; false when protobuf refuses (over 2 GB).
  bool serialize(std::string* out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace frugal::deploy::proto
