#include "frugal/io/hash.h"

#include <openssl/evp.h>
#include <torch/torch.h>

#include <iomanip>
#include <memory>
#include <sstream>

#include "frugal/error.h"

namespace frugal {

std::string params_sha256(const torch::nn::Module& module) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  FRUGAL_CHECK(ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1,
               "params_sha256: cannot initialise SHA-256");
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    at::Tensor t = p.value().detach().to(at::kCPU).contiguous();
    EVP_DigestUpdate(ctx.get(), t.data_ptr(), t.numel() * t.element_size());
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &size);
  std::ostringstream hex;
  for (unsigned int i = 0; i < size; ++i) {
    hex << std::hex << std::setw(2) << std::setfill('0') << static_cast<int>(digest[i]);
  }
  return hex.str();
}

}  // namespace frugal
