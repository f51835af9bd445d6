// Shared helpers for the test executables.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"

namespace vlm2mla::testing {

// The message of the ArgumentError that f() throws; a test failure (naming `expected`, what should have been
// refused, where given), and "", when it throws none.
template <class F>
std::string argument_error(F&& f, const std::string& expected = "") {
  try {
    f();
  } catch (const ArgumentError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ArgumentError" << (expected.empty() ? "" : ": " + expected);
  return "";
}

// A fresh temporary directory, removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A process-wide switch (set_fused_rope, set_kv_head_bmm, ...) restored to the state it had when constructed,
// at scope exit (a failed ASSERT included).
struct SwitchRestore {
  void (*set)(bool);
  bool on;
  ~SwitchRestore() { set(on); }
};

struct CliResult {
  int exit_code = -1;  // -1 when the process did not exit normally (crash, signal)
  bool crashed = false;
  std::string out;
  std::string err;
};

// Runs the vlm2mla CLI built beside the tests with the given arguments (no shell quoting needed).
CliResult run_cli(const std::vector<std::string>& args);

std::string fixtures_dir();  // tests/fixtures
std::string shared_dir();    // ../shared beside the checkout (may not exist)
bool path_exists(const std::string& path);

void write_bytes(const std::string& path, const std::string& bytes);
std::string read_bytes(const std::string& path);

}  // namespace vlm2mla::testing
