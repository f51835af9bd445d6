// The POSIX file-system helpers (used instead of std::filesystem: see core/fs.h).
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/fs.h"
#include "support/test_support.h"

namespace vlm2mla {
namespace {

TEST(Fs, CreateListCopyRemoveTree) {
  testing::TempDir dir;
  const std::string deep = dir.file("a/b/c");
  fs::create_directories(deep);
  fs::create_directories(deep);  // idempotent
  EXPECT_TRUE(fs::is_directory(deep));
  testing::write_bytes(fs::join(deep, "x.safetensors"), "hello");
  fs::copy_file(fs::join(deep, "x.safetensors"), dir.file("a/y.bin"));
  EXPECT_EQ(testing::read_bytes(dir.file("a/y.bin")), "hello");
  EXPECT_EQ(fs::list_directory(dir.file("a")), (std::vector<std::string>{"b", "y.bin"}));
  EXPECT_TRUE(fs::is_regular_file(dir.file("a/y.bin")));
  EXPECT_FALSE(fs::is_regular_file(dir.file("a/b")));
  EXPECT_TRUE(fs::remove_all(dir.file("a")));
  EXPECT_FALSE(fs::exists(dir.file("a")));
  EXPECT_TRUE(fs::remove_all(dir.file("never-there")));
}

TEST(Fs, ErrorsNameThePath) {
  testing::TempDir dir;
  testing::write_bytes(dir.file("file"), "x");
  try {
    fs::create_directories(dir.file("file/sub"));
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("file/sub"), std::string::npos) << e.what();
  }
  EXPECT_THROW(fs::list_directory(dir.file("missing")), IoError);
  EXPECT_THROW(fs::copy_file(dir.file("missing"), dir.file("to")), IoError);
}

TEST(Fs, JoinAndExtension) {
  EXPECT_EQ(fs::join("a", "b"), "a/b");
  EXPECT_EQ(fs::join("a/", "b"), "a/b");
  EXPECT_EQ(fs::extension("d/model.safetensors"), ".safetensors");
  EXPECT_EQ(fs::extension("d.x/model"), "");
  EXPECT_EQ(fs::extension(".hidden"), "");
}

}  // namespace
}  // namespace vlm2mla
