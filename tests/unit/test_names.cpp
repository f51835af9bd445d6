// core/names.h: enumerations read from their names, with one error whose list of choices comes from the names.
#include <gtest/gtest.h>

#include <array>
#include <string>

#include "core/error.h"
#include "core/names.h"
#include "support/test_support.h"

namespace vlm2mla {
namespace {

enum class Fruit { kApple, kPear, kPlum };
const char* fruit_name(Fruit f) {
  switch (f) {
    case Fruit::kApple: return "apple";
    case Fruit::kPear: return "pear";
    case Fruit::kPlum: return "plum";
  }
  return "?";
}

TEST(Names, ChoiceListsJoinWithCommasAndOr) {
  EXPECT_EQ(choice_list(std::array{Fruit::kPear}, fruit_name), "pear");
  EXPECT_EQ(choice_list(std::array{Fruit::kPear, Fruit::kApple}, fruit_name), "pear or apple");
  EXPECT_EQ(choice_list(std::array{Fruit::kApple, Fruit::kPear, Fruit::kPlum}, fruit_name), "apple, pear or plum");
}

TEST(Names, ParseTakesTheNamesAndNamesTheChoicesOtherwise) {
  const std::array all{Fruit::kApple, Fruit::kPear, Fruit::kPlum};
  for (Fruit f : all) EXPECT_EQ(parse_choice(fruit_name(f), "--fruit", "fruit", all, fruit_name), f);
  // names are case-sensitive
  EXPECT_EQ(testing::argument_error([&] { parse_choice("Pear", "--fruit", "fruit", all, fruit_name); }),
            "--fruit: unknown fruit 'Pear' (expected apple, pear or plum)");
  // only the choices given are taken
  EXPECT_THROW(parse_choice("plum", "--fruit", "fruit", std::array{Fruit::kApple, Fruit::kPear}, fruit_name),
               ArgumentError);
}

}  // namespace
}  // namespace vlm2mla
