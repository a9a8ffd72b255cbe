// status.h - the runtime's internal error type (C++), and its bridge to the C ABI's xrt_status_t.
//
// Inside libxrt every fallible function returns Status or Result<T>; nothing throws across xrt.h (c_api.cc
// catches at the boundary). Context is added on the way up with XRT_RETURN_IF_ERROR / XRT_ASSIGN_OR_RETURN, so
// a message reads "creating session: variant cpu-openvino: engine openvino: <engine's message>".
#ifndef XRT_RUNTIME_SRC_STATUS_H_
#define XRT_RUNTIME_SRC_STATUS_H_

#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>

#include "xrt/xrt.h"

// The C status object. Allocated only by xrt_status_make / Status::ToC; freed by xrt_status_free.
struct xrt_status_s {
  xrt_status_code_t code;
  std::string message;
};

namespace xrt::core {

// Concatenates anything streamable: Cat("section ", i, " (", name, ")").
template <typename... Args>
std::string Cat(const Args&... args) {
  if constexpr (sizeof...(Args) == 0) {
    return std::string();
  } else {
    std::ostringstream out;
    (out << ... << args);
    return out.str();
  }
}

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(xrt_status_code_t code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == XRT_STATUS_OK; }
  xrt_status_code_t code() const { return code_; }
  const std::string& message() const { return message_; }

  // "context: message" (context empty: unchanged). Keeps the code.
  Status WithContext(std::string_view context) &&;
  // Hands the status to the C ABI: nullptr when OK. Never throws (allocation failure gives the static
  // RESOURCE_EXHAUSTED status of xrt_status_make).
  xrt_status_t ToC() const noexcept;
  // Takes ownership of a C status (frees it); nullptr is OK.
  static Status FromC(xrt_status_t status);

 private:
  xrt_status_code_t code_ = XRT_STATUS_OK;
  std::string message_;
};

template <typename... Args>
Status MakeStatus(xrt_status_code_t code, const Args&... args) {
  return Status(code, Cat(args...));
}
#define XRT_STATUS_FACTORY(Name, CODE)                  \
  template <typename... Args>                           \
  Status Name(const Args&... args) {                    \
    return MakeStatus(CODE, args...);                   \
  }
XRT_STATUS_FACTORY(InvalidArgument, XRT_STATUS_INVALID_ARGUMENT)
XRT_STATUS_FACTORY(NotFound, XRT_STATUS_NOT_FOUND)
XRT_STATUS_FACTORY(FailedPrecondition, XRT_STATUS_FAILED_PRECONDITION)
XRT_STATUS_FACTORY(ResourceExhausted, XRT_STATUS_RESOURCE_EXHAUSTED)
XRT_STATUS_FACTORY(Unavailable, XRT_STATUS_UNAVAILABLE)
XRT_STATUS_FACTORY(Incompatible, XRT_STATUS_INCOMPATIBLE)
XRT_STATUS_FACTORY(DataCorrupt, XRT_STATUS_DATA_CORRUPT)
XRT_STATUS_FACTORY(Unimplemented, XRT_STATUS_UNIMPLEMENTED)
XRT_STATUS_FACTORY(Internal, XRT_STATUS_INTERNAL)
XRT_STATUS_FACTORY(IoError, XRT_STATUS_IO)
XRT_STATUS_FACTORY(PermissionDenied, XRT_STATUS_PERMISSION_DENIED)
#undef XRT_STATUS_FACTORY

// A value or a non-OK Status. Move-only. Constructing it from an OK Status is a bug and yields INTERNAL.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    if (status_.ok()) status_ = Status(XRT_STATUS_INTERNAL, "bug: Result constructed from an OK status");
  }
  Result(Result&&) noexcept = default;
  Result& operator=(Result&&) noexcept = default;
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;

  bool ok() const { return value_.has_value(); }
  // Precondition: ok().
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  // OK when ok().
  const Status& status() const& { return status_; }
  Status&& status() && { return std::move(status_); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace xrt::core

#define XRT_CONCAT_INNER_(a, b) a##b
#define XRT_CONCAT_(a, b) XRT_CONCAT_INNER_(a, b)

// Returns the Status of `expr` (a Status) from the enclosing function if it is not OK, prefixed with the context
// built from the remaining arguments: XRT_RETURN_IF_ERROR(Check(x), "input ", name).
#define XRT_RETURN_IF_ERROR(expr, ...)                                                          \
  do {                                                                                          \
    ::xrt::core::Status xrt_status_tmp_ = (expr);                                               \
    if (!xrt_status_tmp_.ok()) {                                                                \
      return std::move(xrt_status_tmp_).WithContext(::xrt::core::Cat(__VA_ARGS__));            \
    }                                                                                           \
  } while (0)

// `lhs = value of expr` (a Result<T>), or returns its Status with context: XRT_ASSIGN_OR_RETURN(auto x, F(), "f").
#define XRT_ASSIGN_OR_RETURN(lhs, expr, ...) \
  XRT_ASSIGN_OR_RETURN_IMPL_(XRT_CONCAT_(xrt_result_tmp_, __LINE__), lhs, expr, __VA_ARGS__)
#define XRT_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr, ...)                                  \
  auto tmp = (expr);                                                                     \
  if (!tmp.ok()) return std::move(tmp).status().WithContext(::xrt::core::Cat(__VA_ARGS__)); \
  lhs = std::move(tmp).value()

#endif  // XRT_RUNTIME_SRC_STATUS_H_
