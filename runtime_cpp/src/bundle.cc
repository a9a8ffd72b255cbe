#include "bundle.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace xrt::core {

Status FromFormatError(const format::Error& error) {
  switch (error.code) {
    case format::Code::kIncompatible: return Incompatible(error.message);
    case format::Code::kResourceExhausted: return ResourceExhausted(error.message);
    case format::Code::kPermissionDenied: return PermissionDenied(error.message);
    case format::Code::kDataCorrupt:
    case format::Code::kOk: break;
  }
  return DataCorrupt(error.message);
}

Bundle::~Bundle() {
  reader_.reset();
  if (mapping_ != nullptr) munmap(mapping_, mapping_size_);
}

Result<const Model*> Bundle::model() const {
  if (!model_) return model_error_;
  return static_cast<const Model*>(model_.get());
}

Result<std::shared_ptr<const Bundle>> Bundle::Finish(std::unique_ptr<Bundle> bundle, const uint8_t* data,
                                                     size_t size, const format::VerifyOptions& policy) {
  auto verified = format::Bundle::Verify(data, size, policy);
  if (!verified.ok()) return FromFormatError(verified.error()).WithContext(Cat("bundle ", bundle->origin_));
  bundle->reader_ = std::make_unique<format::Bundle>(std::move(verified).value());
  auto model = ParseModel(bundle->reader_->manifest(), *bundle->reader_);
  if (model.ok()) {
    bundle->model_ = std::move(model).value();
  } else {
    bundle->model_error_ = std::move(model).status().WithContext(Cat("bundle ", bundle->origin_));
  }
  return std::shared_ptr<const Bundle>(std::move(bundle));
}

Result<std::shared_ptr<const Bundle>> Bundle::OpenFile(const std::string& path,
                                                       const format::VerifyOptions& policy) {
  auto bundle = std::unique_ptr<Bundle>(new Bundle());
  bundle->origin_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) return NotFound("bundle file ", path, " does not exist");
    return IoError("cannot open bundle file ", path, ": ", std::strerror(err));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return IoError("cannot stat bundle file ", path, ": ", std::strerror(err));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return InvalidArgument(path, " is a directory; pass the path of a .xrtpkg file");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgument(path, " is not a regular file; pass the path of a .xrtpkg file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  const uint8_t* data = nullptr;
  if (size > 0) {
    void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      if (err == ENOMEM) return ResourceExhausted("cannot map bundle file ", path, " (", size, " bytes): ",
                                                  std::strerror(err));
      return IoError("cannot map bundle file ", path, ": ", std::strerror(err));
    }
    bundle->mapping_ = m;
    bundle->mapping_size_ = size;
    data = static_cast<const uint8_t*>(m);
  }
  ::close(fd);  // the mapping stays valid without the descriptor
  return Finish(std::move(bundle), data, size, policy);
}

Result<std::shared_ptr<const Bundle>> Bundle::OpenMemory(const void* data, size_t size,
                                                         const format::VerifyOptions& policy) {
  if (data == nullptr && size != 0) return InvalidArgument("data is NULL but size is ", size);
  auto bundle = std::unique_ptr<Bundle>(new Bundle());
  bundle->origin_ = "<memory>";
  return Finish(std::move(bundle), static_cast<const uint8_t*>(data), size, policy);
}

}  // namespace xrt::core
