// frugal's one error type and the check macro that raises it.
//
// Every user-facing failure (bad option, bad file, bad tensor shape) is a frugal::Error whose
// message names the option, file or shape and says what was expected; no stack trace noise.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace frugal {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
[[noreturn]] void throw_error(const std::string& message);
}  // namespace detail

}  // namespace frugal

/// FRUGAL_CHECK(cond, "accumulate_grad_batches must be >= 1, got ", n);
#define FRUGAL_CHECK(cond, ...)                                             \
  do {                                                                      \
    if (!(cond)) {                                                          \
      ::frugal::detail::throw_error(::frugal::detail::concat(__VA_ARGS__)); \
    }                                                                       \
  } while (false)
