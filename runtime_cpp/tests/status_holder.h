// status_holder.h - the C API tests' status helpers: own a returned xrt_status_t, and check its code and message.
#ifndef XRT_RUNTIME_TESTS_STATUS_HOLDER_H_
#define XRT_RUNTIME_TESTS_STATUS_HOLDER_H_

#include <gtest/gtest.h>

#include <string>

#include "xrt/xrt.h"

// Owns a status returned by the API and exposes its code and message.
struct StatusHolder {
  explicit StatusHolder(xrt_status_t s) : status(s) {}
  ~StatusHolder() { xrt_status_free(status); }
  StatusHolder(const StatusHolder&) = delete;
  StatusHolder& operator=(const StatusHolder&) = delete;
  std::string code() const { return xrt_status_code_string(xrt_status_code(status)); }
  std::string message() const { return xrt_status_message(status); }
  xrt_status_t status;
};

#define EXPECT_STATUS(expr, code_name, needle)                                            \
  do {                                                                                    \
    StatusHolder h_(expr);                                                                \
    EXPECT_EQ(h_.code(), code_name) << h_.message();                                      \
    EXPECT_NE(h_.message().find(needle), std::string::npos) << "message: " << h_.message(); \
  } while (0)

#define ASSERT_OK(expr)                                 \
  do {                                                  \
    StatusHolder h_(expr);                              \
    ASSERT_EQ(h_.code(), "OK") << h_.message();         \
  } while (0)

#endif  // XRT_RUNTIME_TESTS_STATUS_HOLDER_H_
