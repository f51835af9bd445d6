#include "core/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace vlm2mla::fs {

namespace {
bool stat_path(const std::string& path, struct stat* st) { return ::stat(path.c_str(), st) == 0; }
}  // namespace

bool exists(const std::string& path) {
  struct stat st {};
  return stat_path(path, &st);
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return stat_path(path, &st) && S_ISDIR(st.st_mode);
}

bool is_regular_file(const std::string& path) {
  struct stat st {};
  return stat_path(path, &st) && S_ISREG(st.st_mode);
}

std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

std::string extension(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash) ||
      dot == (slash == std::string::npos ? 0 : slash + 1)) {
    return "";
  }
  return path.substr(dot);
}

void create_directories(const std::string& path) {
  // Each prefix ending before a '/', then the path itself.
  for (size_t pos = path.find('/', 1);; pos = path.find('/', pos + 1)) {
    const std::string prefix = pos == std::string::npos ? path : path.substr(0, pos);
    if (!prefix.empty() && !is_directory(prefix)) {
      if (::mkdir(prefix.c_str(), 0777) != 0 && errno != EEXIST) {
        throw IoError(detail::concat("cannot create directory '", path, "': '", prefix, "': ",
                                     std::strerror(errno)));
      }
      VLM2MLA_CHECK(is_directory(prefix), IoError, "cannot create directory '", path, "': '",
                    prefix, "' exists and is not a directory");
    }
    if (pos == std::string::npos) break;
  }
}

bool remove_all(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return errno == ENOENT;
  if (!S_ISDIR(st.st_mode)) return ::unlink(path.c_str()) == 0;
  auto remove_entry = [](const char* p, const struct stat*, int, struct FTW*) -> int {
    return ::remove(p) == 0 ? 0 : -1;
  };
  // Depth first, not following symbolic links: children go before their directory.
  return ::nftw(path.c_str(), remove_entry, 32, FTW_DEPTH | FTW_PHYS) == 0;
}

std::vector<std::string> list_directory(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) {
    throw IoError(detail::concat("cannot list directory '", path, "': ", std::strerror(errno)));
  }
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

void copy_file(const std::string& from, const std::string& to) {
  int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) throw IoError(detail::concat("cannot open '", from, "': ", std::strerror(errno)));
  int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (out < 0) {
    const int err = errno;
    ::close(in);
    throw IoError(detail::concat("cannot create '", to, "': ", std::strerror(err)));
  }
  char buffer[1 << 16];
  for (;;) {
    ssize_t n = ::read(in, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    bool ok = n >= 0;
    for (ssize_t done = 0; ok && done < n;) {
      ssize_t w = ::write(out, buffer + done, static_cast<size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      ok = w > 0;
      done += w > 0 ? w : 0;
    }
    if (!ok) {
      const int err = errno;
      ::close(in);
      ::close(out);
      throw IoError(detail::concat("cannot copy '", from, "' to '", to, "': ", std::strerror(err)));
    }
    if (n == 0) break;
  }
  ::close(in);
  if (::close(out) != 0) {
    throw IoError(detail::concat("cannot write '", to, "': ", std::strerror(errno)));
  }
}

std::string temp_directory() {
  const char* t = std::getenv("TMPDIR");
  return (t != nullptr && *t != '\0') ? t : "/tmp";
}

}  // namespace vlm2mla::fs
