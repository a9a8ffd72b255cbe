#include "status.h"

namespace xrt::core {

Status Status::WithContext(std::string_view context) && {
  if (ok() || context.empty()) return std::move(*this);
  std::string message;
  message.reserve(context.size() + 2 + message_.size());
  message.append(context).append(": ").append(message_);
  return Status(code_, std::move(message));
}

xrt_status_t Status::ToC() const noexcept {
  if (ok()) return nullptr;
  return xrt_status_make(code_, message_.c_str());
}

Status Status::FromC(xrt_status_t status) {
  if (status == nullptr) return Status();
  Status s(xrt_status_code(status), xrt_status_message(status));
  xrt_status_free(status);
  if (s.ok()) return Status();
  return s;
}

}  // namespace xrt::core
