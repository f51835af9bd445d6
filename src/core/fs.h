// File-system helpers on POSIX calls.
//
// Why not std::filesystem: the torch 2.11 wheel's libtorch.so exports its own copies of
// std::filesystem functions, and the dynamic linker binds ours to them; std::filesystem::remove_all
// then jumps through a null pointer (seen on the GPU machine, 2026-11-28). Plain POSIX calls have no
// such clash, so the project uses these everywhere.
#pragma once

#include <string>
#include <vector>

namespace vlm2mla::fs {

bool exists(const std::string& path);
bool is_directory(const std::string& path);
bool is_regular_file(const std::string& path);

// "a" + "b" -> "a/b" (no doubled slash).
std::string join(const std::string& dir, const std::string& name);
std::string extension(const std::string& path);  // ".safetensors", "" when none

// Creates the directory and its missing parents; throws IoError naming the path.
void create_directories(const std::string& path);

// Removes a file or a directory tree; returns false if anything could not be removed.
bool remove_all(const std::string& path);

// Names of the entries of a directory (no "." or ".."), sorted; throws IoError naming the path.
std::vector<std::string> list_directory(const std::string& path);

// Copies a regular file; throws IoError naming both paths.
void copy_file(const std::string& from, const std::string& to);

// $TMPDIR, else /tmp.
std::string temp_directory();

}  // namespace vlm2mla::fs
