// Enumerations read from their names (command-line values, config keys, environment variables): one loop and
// one error for all of them, its list of choices made from the names themselves so that it cannot drift from
// what is accepted.
#pragma once

#include <array>
#include <cstddef>
#include <string>

#include "core/error.h"

namespace vlm2mla {

// "a", "a or b", "a, b or c": the names of `choices` in their order.
template <class E, std::size_t N>
std::string choice_list(const std::array<E, N>& choices, const char* (*name_of)(E)) {
  std::string out;
  for (std::size_t i = 0; i < N; ++i) {
    if (i > 0) out += i + 1 == N ? " or " : ", ";
    out += name_of(choices[i]);
  }
  return out;
}

// The choice named `text`; else ArgumentError "WHAT: unknown KIND 'TEXT' (expected a, b or c)".
template <class E, std::size_t N>
E parse_choice(const std::string& text, const std::string& what, const char* kind, const std::array<E, N>& choices,
               const char* (*name_of)(E)) {
  for (E c : choices)
    if (text == name_of(c)) return c;
  throw ArgumentError(
      detail::concat(what, ": unknown ", kind, " '", text, "' (expected ", choice_list(choices, name_of), ")"));
}

}  // namespace vlm2mla
