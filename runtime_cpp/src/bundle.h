// bundle.h - an opened, verified bundle: the bytes (a private in-memory copy of the file, sections read into private
// memory and verified on first use, or borrowed memory), the format reader's view over them, and the manifest's model
// description.
//
// Immutable after Open*(); shared (std::shared_ptr) by the C handle and by every session created from it.
#ifndef XRT_RUNTIME_SRC_BUNDLE_H_
#define XRT_RUNTIME_SRC_BUNDLE_H_

#include <cstddef>
#include <memory>
#include <string>

#include "manifest.h"
#include "status.h"
#include "xrtpkg_reader.h"

namespace xrt::core {

class Bundle {
 public:
  // Reads `path` into private anonymous memory and verifies that copy. NOT_FOUND (no such file), INVALID_ARGUMENT
  // (a directory or other non-regular file), IO (the OS refused, or the file shrank while read), RESOURCE_EXHAUSTED
  // (no memory for the copy), then the format verdicts (PERMISSION_DENIED: refused by `policy`). A signed bundle is
  // read whole and verified at open; an unsigned one is verified on use (its header, table and manifest at open, each
  // other section when a session first needs it, read into private memory and verified there). Either way nothing
  // done to the file later (writes, truncation, replacement) reaches an engine: a section already verified is kept,
  // and one first needed after an in-place change fails its check (DATA_CORRUPT naming the section).
  static Result<std::shared_ptr<const Bundle>> OpenFile(const std::string& path,
                                                        const format::VerifyOptions& policy = {});
  // Verifies bytes the caller keeps alive for the bundle's lifetime and its sessions'.
  static Result<std::shared_ptr<const Bundle>> OpenMemory(const void* data, size_t size,
                                                          const format::VerifyOptions& policy = {});

  ~Bundle();
  Bundle(const Bundle&) = delete;
  Bundle& operator=(const Bundle&) = delete;

  const format::Bundle& reader() const { return *reader_; }
  const std::string& manifest_text() const { return reader_->manifest_text(); }
  // The manifest's model and variants. Their validation runs at open but is reported here (at session creation):
  // the format accepts any JSON object, so a bundle with an unusable manifest still opens for inspection.
  Result<const Model*> model() const;
  // Where the bytes came from, for messages: the path, or "<memory>".
  const std::string& origin() const { return origin_; }
  // Load profile: seconds OpenFile() spent verifying the header, table and manifest (0 for a signed or in-memory
  // bundle, verified whole), and so far reading and verifying sections on first use (--profile-load).
  double open_verify_seconds() const { return open_seconds_; }
  double section_verify_seconds() const { return reader_ ? reader_->section_verify_seconds() : 0.0; }

 private:
  Bundle() = default;
  static Result<std::shared_ptr<const Bundle>> Finish(std::unique_ptr<Bundle> bundle, const uint8_t* data,
                                                      size_t size, const format::VerifyOptions& policy);
  static Result<std::shared_ptr<const Bundle>> Finish(std::unique_ptr<Bundle> bundle,
                                                      format::Result<format::Bundle> verified);

  std::string origin_;
  void* mapping_ = nullptr;  // the private copy of the file (anonymous mapping), munmap'ed in the destructor
  size_t mapping_size_ = 0;
  std::unique_ptr<format::Bundle> reader_;
  std::unique_ptr<Model> model_;
  Status model_error_;
  double open_seconds_ = 0.0;
};

// The format reader's verdict as a runtime Status.
Status FromFormatError(const format::Error& error);

}  // namespace xrt::core

#endif  // XRT_RUNTIME_SRC_BUNDLE_H_
