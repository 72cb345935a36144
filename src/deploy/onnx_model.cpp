#include "deploy/onnx_model.h"

#include "onnx.pb.h"  // generated at build time from ONNX's onnx.proto (see CMakeLists.txt)

namespace frugal::deploy::proto {

struct ModelWriter::Impl {
  onnx::ModelProto model;
  onnx::GraphProto* graph = nullptr;
};

ModelWriter::ModelWriter(int64_t opset, int64_t ir_version, const std::string& graph_name,
                         const std::string& producer)
    : impl_(std::make_unique<Impl>()) {
  impl_->model.set_ir_version(ir_version);
  impl_->model.set_producer_name(producer);
  impl_->model.set_model_version(1);
  auto* opset_import = impl_->model.add_opset_import();
  opset_import->set_domain("");
  opset_import->set_version(opset);
  impl_->graph = impl_->model.mutable_graph();
  impl_->graph->set_name(graph_name);
}

ModelWriter::~ModelWriter() = default;

void ModelWriter::add_node(const std::string& name, const std::string& op_type,
                           const std::vector<std::string>& inputs,
                           const std::vector<std::string>& outputs,
                           const std::vector<Attribute>& attributes) {
  onnx::NodeProto* node = impl_->graph->add_node();
  node->set_name(name);
  node->set_op_type(op_type);
  for (const auto& input : inputs) node->add_input(input);
  for (const auto& output : outputs) node->add_output(output);
  for (const auto& attribute : attributes) {
    onnx::AttributeProto* a = node->add_attribute();
    a->set_name(attribute.name);
    if (auto* i = std::get_if<int64_t>(&attribute.value)) {
      a->set_type(onnx::AttributeProto_AttributeType_INT);
      a->set_i(*i);
    } else if (auto* f = std::get_if<float>(&attribute.value)) {
      a->set_type(onnx::AttributeProto_AttributeType_FLOAT);
      a->set_f(*f);
    } else if (auto* is = std::get_if<std::vector<int64_t>>(&attribute.value)) {
      a->set_type(onnx::AttributeProto_AttributeType_INTS);
      for (int64_t v : *is) a->add_ints(v);
    } else if (auto* fs = std::get_if<std::vector<float>>(&attribute.value)) {
      a->set_type(onnx::AttributeProto_AttributeType_FLOATS);
      for (float v : *fs) a->add_floats(v);
    } else {
      a->set_type(onnx::AttributeProto_AttributeType_STRING);
      a->set_s(std::get<std::string>(attribute.value));
    }
  }
}

void ModelWriter::add_initializer(const std::string& name, DataType type,
                                  const std::vector<int64_t>& dims, const void* data,
                                  size_t bytes) {
  onnx::TensorProto* t = impl_->graph->add_initializer();
  t->set_name(name);
  for (int64_t d : dims) t->add_dims(d);
  t->set_data_type(type == DataType::kFloat ? onnx::TensorProto_DataType_FLOAT
                                            : onnx::TensorProto_DataType_INT64);
  t->set_raw_data(std::string(static_cast<const char*>(data), bytes));
}

namespace {
void set_value_info(onnx::ValueInfoProto* info, const std::string& name,
                    const std::vector<int64_t>& dims, const std::string& dim_param) {
  info->set_name(name);
  auto* tensor_type = info->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(onnx::TensorProto_DataType_FLOAT);
  auto* shape = tensor_type->mutable_shape();
  for (int64_t d : dims) {
    auto* dim = shape->add_dim();
    if (d < 0) {
      dim->set_dim_param(dim_param);
    } else {
      dim->set_dim_value(d);
    }
  }
}
}  // namespace

void ModelWriter::add_input(const std::string& name, const std::vector<int64_t>& dims,
                            const std::string& dim_param) {
  set_value_info(impl_->graph->add_input(), name, dims, dim_param);
}

void ModelWriter::add_output(const std::string& name, const std::vector<int64_t>& dims,
                             const std::string& dim_param) {
  set_value_info(impl_->graph->add_output(), name, dims, dim_param);
}

bool ModelWriter::serialize(std::string* out) const { return impl_->model.SerializeToString(out); }

}  // namespace frugal::deploy::proto
