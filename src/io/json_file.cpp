#include "io/json_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <random>
#include <sstream>

#include "core/error.h"

namespace vlm2mla::io {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

// Reads a whole file. POSIX calls rather than iostreams so the error can name errno's reason.
std::string read_whole_file(const std::string& path) {
  int fd = -1;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw IoError(detail::concat("cannot open '", path, "': ", errno_text(errno)));
  std::string text;
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;  // EISDIR for a directory
      ::close(fd);
      throw IoError(detail::concat("cannot read '", path, "': ", errno_text(err)));
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return text;
}

// A name no other writer will pick: pid, plus randomness for concurrent writers in one process.
std::string temp_path_for(const std::string& path) {
  static std::mt19937_64 rng = [] {
    std::random_device device;
    const uint64_t seed = (uint64_t{device()} << 32) ^ device() ^
                          static_cast<uint64_t>(
                              std::chrono::steady_clock::now().time_since_epoch().count());
    return std::mt19937_64(seed);
  }();
  static std::mutex mutex;
  uint64_t r = 0;
  {
    std::lock_guard<std::mutex> lock(mutex);
    r = rng();
  }
  std::ostringstream os;
  os << path << ".tmp-" << ::getpid() << '-' << std::hex << r;
  return os.str();
}

// Owns the temporary file until commit(): the destructor closes it and removes it, so every exit
// path other than a completed rename leaves the directory as it was.
class TempFile {
 public:
  explicit TempFile(const std::string& path) : path_(path) {
    // O_EXCL: never write through somebody else's file; a clash just draws another name.
    for (int attempt = 0; attempt < 8; ++attempt) {
      temp_ = temp_path_for(path);
      fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0 || (errno != EEXIST && errno != EINTR)) break;
    }
    if (fd_ < 0) {
      throw IoError(detail::concat("cannot write '", path, "': cannot create temporary file '",
                                   temp_, "': ", errno_text(errno)));
    }
  }
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(temp_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  void write(const void* data, size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
      // Linux writes at most ~2 GiB per call; ask for 1 GiB pieces and loop on short writes.
      const size_t chunk = std::min<size_t>(size, size_t{1} << 30);
      const ssize_t n = ::write(fd_, p, chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("write", errno);
      p += n;
      size -= static_cast<size_t>(n);
    }
  }

  // Makes the bytes durable, then atomically replaces `path`.
  void commit() {
    if (::fsync(fd_) != 0) fail("fsync", errno);
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail("close", errno);
    if (::rename(temp_.c_str(), path_.c_str()) != 0) fail("rename", errno);
    committed_ = true;
    sync_parent_dir();
  }

 private:
  [[noreturn]] void fail(const char* op, int err) const {
    throw IoError(detail::concat("cannot write '", path_, "': ", op, " of temporary file '", temp_,
                                 "' failed: ", errno_text(err)));
  }

  // Persists the rename itself. Best effort: the data is already safe, and some filesystems
  // refuse fsync on directories.
  void sync_parent_dir() const {
    const size_t slash = path_.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)::fsync(fd);
    ::close(fd);
  }

  std::string path_;
  std::string temp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace

nlohmann::json read_json_file(const std::string& path) {
  const std::string text = read_whole_file(path);
  // nlohmann stops at a NUL byte as if the input ended there; valid JSON never holds a raw NUL.
  const size_t nul = text.find('\0');
  if (nul != std::string::npos) {
    throw FormatError(detail::concat("'", path, "' is not valid JSON: NUL byte at offset ", nul));
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // e.what() carries the parser's line and column.
    throw FormatError(detail::concat("'", path, "' is not valid JSON: ", e.what()));
  }
}

void write_file_atomic_streamed(const std::string& path,
                                const std::function<void(const ByteSink& sink)>& produce) {
  TempFile temp(path);
  const ByteSink sink = [&temp](const void* data, size_t size) { temp.write(data, size); };
  produce(sink);
  temp.commit();
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic_streamed(path,
                             [&bytes](const ByteSink& sink) { sink(bytes.data(), bytes.size()); });
}

void write_json_file(const std::string& path, const nlohmann::json& value) {
  std::string text;
  try {
    text = value.dump(2);
  } catch (const nlohmann::json::exception& e) {
    // dump() throws on strings that are not valid UTF-8: the value, not the file, is at fault.
    throw ArgumentError(detail::concat("cannot write JSON to '", path, "': ", e.what()));
  }
  text += '\n';
  write_file_atomic(path, text);
}

}  // namespace vlm2mla::io
