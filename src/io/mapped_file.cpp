#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "core/error.h"

namespace vlm2mla::io {

namespace {

[[noreturn]] void fail_errno(const std::string& path, const char* what, int err) {
  throw IoError(detail::concat("cannot ", what, " '", path, "': ", std::strerror(err)));
}

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = -1;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) fail_errno(path, "open", errno);

  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail_errno(path, "stat", err);
  }
  // Directories open fine with O_RDONLY; mmap would then fail with a confusing ENODEV.
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw IoError(detail::concat("cannot map '", path, "': not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > std::numeric_limits<size_t>::max()) {
    ::close(fd);
    throw IoError(detail::concat("cannot map '", path, "': file of ", st.st_size,
                                 " bytes is too large for this address space"));
  }
  size_ = static_cast<size_t>(st.st_size);

  // mmap of length 0 is EINVAL; an empty file is valid and simply has no bytes.
  if (size_ > 0) {
    // Read-only and private: tensors are views of these pages, and a stray write must fault rather
    // than reach the checkpoint on disk. (PROT_WRITE copy-on-write would instead be charged as
    // committed memory for the whole file, which large checkpoints cannot afford.)
    void* addr = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      fail_errno(path, "mmap", err);
    }
    data_ = static_cast<const uint8_t*>(addr);
  }
  // The mapping keeps its own reference to the file; the descriptor is no longer needed.
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace vlm2mla::io
