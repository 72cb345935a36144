// AddressSanitizer (scripts/sanitize) replaces malloc, keeps freed blocks in quarantine and maps
// shadow memory: a test that measures glibc's malloc or the process's resident memory skips
// itself in that build, saying why.
#pragma once

#include <gtest/gtest.h>

#if defined(__SANITIZE_ADDRESS__)
#define FRUGAL_TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FRUGAL_TEST_UNDER_ASAN 1
#endif
#endif

#ifdef FRUGAL_TEST_UNDER_ASAN
#define FRUGAL_SKIP_UNDER_ASAN()                                                              \
  GTEST_SKIP() << "measures malloc and resident memory, which AddressSanitizer replaces and " \
                  "inflates (scripts/sanitize)"
#else
#define FRUGAL_SKIP_UNDER_ASAN() static_cast<void>(0)
#endif
