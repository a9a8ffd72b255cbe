#include "bundle.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
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

namespace {

// The bundle file, read with pread for verification on use. Owns the descriptor: a later rename over the path does
// not change what it reads; a write or truncation in place does, and fails the section's check (or read).
class FileSource final : public format::ByteSource {
 public:
  FileSource(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~FileSource() override { ::close(fd_); }
  std::optional<format::Error> Read(uint64_t offset, size_t n, uint8_t* out) const override {
    size_t done = 0;
    while (done < n) {
      const ssize_t r = ::pread(fd_, out + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        return format::Error{format::Code::kDataCorrupt,
                             Cat("cannot read bundle file ", path_, ": ", std::strerror(errno))};
      }
      if (r == 0) {
        return format::Error{format::Code::kDataCorrupt,
                             Cat("bundle file ", path_, " is shorter than when it was opened (read ", done, " of ", n,
                                 " bytes at offset ", offset, "): it was changed in place after open; open it again")};
      }
      done += static_cast<size_t>(r);
    }
    return std::nullopt;
  }

 private:
  int fd_;
  std::string path_;
};

}  // namespace

Result<std::shared_ptr<const Bundle>> Bundle::Finish(std::unique_ptr<Bundle> bundle, const uint8_t* data,
                                                     size_t size, const format::VerifyOptions& policy) {
  return Finish(std::move(bundle), format::Bundle::Verify(data, size, policy));
}

Result<std::shared_ptr<const Bundle>> Bundle::Finish(std::unique_ptr<Bundle> bundle,
                                                     format::Result<format::Bundle> verified) {
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
  // Unsigned bundles are verified on use (formats/xrtpkg.md, "Verification on use"): the header, table, padding and
  // manifest now; each other section when a session first needs it, read with pread into private memory and
  // verified there. Signed bundles are verified whole below: the signature covers every byte.
  const size_t size = static_cast<size_t>(st.st_size);
  if (size >= format::kHeaderSize) {
    uint8_t header[format::kHeaderSize];
    ssize_t n;
    do {
      n = ::pread(fd, header, sizeof(header), 0);
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(sizeof(header)) && !format::Bundle::NeedsWholeFile(header, sizeof(header))) {
      std::shared_ptr<const format::ByteSource> source;
      try {
        source = std::make_shared<FileSource>(fd, path);  // owns fd from here
      } catch (const std::bad_alloc&) {
        ::close(fd);
        return ResourceExhausted("cannot allocate the reader of bundle file ", path);
      }
      const auto start = std::chrono::steady_clock::now();
      auto verified = format::Bundle::VerifyIndex(std::move(source), size, policy);
      bundle->open_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return Finish(std::move(bundle), std::move(verified));
    }
  }
  // Verified bytes must be the bytes used (SECURITY.md, "The bundle file after open"): the file is read into
  // private anonymous memory, verified there, and engines only ever see that copy. A file mapping would not do:
  // MAP_PRIVATE pages are shared with the page cache until written, so a later write to the file changes what the
  // engines read, and a truncation turns the next access into SIGBUS.
  const uint8_t* data = nullptr;
  if (size > 0) {
    void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return ResourceExhausted("cannot allocate ", size, " bytes to read bundle file ", path, ": ",
                               std::strerror(err));
    }
    bundle->mapping_ = m;  // owned from here: the destructor unmaps it on every return below
    bundle->mapping_size_ = size;
    // Huge pages where the kernel offers them (THP "madvise" mode): ~500x fewer page faults while reading. Advice
    // only: a refusal changes nothing but speed.
    ::madvise(m, size, MADV_HUGEPAGE);
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pread(fd, static_cast<uint8_t*>(m) + done, size - done, static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        const int err = errno;
        ::close(fd);
        return IoError("cannot read bundle file ", path, ": ", std::strerror(err));
      }
      if (n == 0) {
        ::close(fd);
        return IoError("bundle file ", path, " shrank while it was read (", done, " of ", size,
                       " bytes); it is being replaced: retry once the writer is done (write elsewhere, then rename)");
      }
      done += static_cast<size_t>(n);
    }
    ::mprotect(m, size, PROT_READ);  // immutable from here on; a failure only loses the write protection
    data = static_cast<const uint8_t*>(m);
  }
  ::close(fd);
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
