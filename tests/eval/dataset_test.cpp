// The dataset loader: every malformed line is reported with its number and reason; video
// items are kept aside as unsupported; the built-in pack loads cleanly.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "common/temp_dir.h"
#include "core/file_util.h"
#include "eval/dataset.h"

namespace ost::eval {
namespace {

const std::string kPack = std::string(OST_ASSETS) + "/../data/scenarios/store_pack.jsonl";

TEST(Dataset, ReportsEveryMalformedLine) {
  testing::TempDir dir;
  ASSERT_TRUE(write_file(dir / "a.png", "x").is_ok());  // existence is all the loader checks
  const std::string ok =
      R"({"id": "ok", "scene": "Kitchen", "category": ["Kitchen"], "images": ["a.png"], "question": "q", "format": "open", "answer": "x"})";
  const std::string text =
      ok + "\n"                                                                                     // 1
      "\n"                                                                                          // 2 blank
      "# a comment\n"                                                                               // 3
      "{not json\n"                                                                                 // 4
      R"({"id": "s", "scene": "Garage", "category": ["x"], "images": ["a.png"], "question": "q", "format": "open", "answer": "x"})" "\n"  // 5
      R"({"id": "m", "scene": "Kitchen", "category": ["x"], "images": ["missing.png"], "question": "q", "format": "open", "answer": "x"})" "\n"  // 6
      R"({"id": "c", "scene": "Kitchen", "category": ["x"], "images": ["a.png"], "question": "q", "format": "mcq", "choices": ["1", "2"], "answer": "C"})" "\n"  // 7
      R"({"id": "j", "scene": "Kitchen", "category": ["x"], "images": ["a.png"], "question": "q", "format": "json", "schema": {"type": "object", "patternProperties": {}}})" "\n"  // 8
      + ok + "\n"                                                                                   // 9 duplicate id
      R"({"id": "v", "scene": "Kitchen", "category": ["x"], "video": ["a.png", "a.png"], "question": "q", "format": "open", "answer": "x"})" "\n"  // 10 video
      R"({"id": "f", "scene": "Kitchen", "category": ["x"], "images": ["a.png"], "question": "q", "format": "essay", "answer": "x"})" "\n"  // 11
      R"({"id": "e", "scene": "Kitchen", "category": ["x"], "images": ["a.png"], "question": "q", "format": "json", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}}, "expected": {"n": "two"}})" "\n"  // 12
      R"({"id": "n", "scene": "Kitchen", "category": [], "images": ["a.png"], "question": "q", "format": "open", "answer": "x"})" "\n"  // 13
      R"({"id": "b", "scene": "Kitchen", "category": ["x"], "images": ["a.png"], "question": "q", "format": "mcq", "choices": ["1", "2"], "answer": "B"})" "\n";  // 14 fine
  Dataset d = parse_dataset(text, dir.path());
  std::map<int, std::string> errs;
  for (auto& e : d.errors) errs[e.line] = e.reason;
  ASSERT_EQ(errs.size(), 9u) << format_issues(d.errors);
  EXPECT_EQ(errs[4], "not valid JSON");
  EXPECT_NE(errs[5].find("unknown scene \"Garage\""), std::string::npos);
  EXPECT_EQ(errs[6], "image \"missing.png\" not found");
  EXPECT_EQ(errs[7], "answer \"C\" is past the last choice");
  EXPECT_NE(errs[8].find("unsupported keyword \"patternProperties\""), std::string::npos);
  EXPECT_EQ(errs[9], "duplicate id (first on line 1)");
  EXPECT_NE(errs[11].find("unknown format \"essay\""), std::string::npos);
  EXPECT_NE(errs[12].find("does not fit its schema"), std::string::npos);
  EXPECT_EQ(errs[13], "\"category\" is empty");
  ASSERT_EQ(d.items.size(), 2u);
  EXPECT_EQ(d.items[1].answer_index, 1);
  EXPECT_EQ(d.items[0].line, 1);
  ASSERT_EQ(d.unsupported.size(), 1u);
  EXPECT_EQ(d.unsupported[0].line, 10);
  EXPECT_EQ(d.unsupported[0].id, "v");
  EXPECT_NE(format_issues(d.errors).find("line 6 (m): image \"missing.png\" not found"), std::string::npos);
}

TEST(Dataset, McqAnswerByText) {
  testing::TempDir dir;
  ASSERT_TRUE(write_file(dir / "a.png", "x").is_ok());
  Dataset d = parse_dataset(
      R"({"id": "t", "scene": "ShopFront", "category": ["ShopFront"], "images": ["a.png"], "question": "q", "format": "mcq", "choices": ["Open", "Closed"], "answer": "Closed"})",
      dir.path());
  ASSERT_TRUE(d.errors.empty()) << format_issues(d.errors);
  EXPECT_EQ(d.items[0].answer_index, 1);
  EXPECT_EQ(d.items[0].reference(), "B. Closed");
}

TEST(Dataset, BuiltInPackLoads) {
  auto d = load_dataset(kPack);
  ASSERT_TRUE(d.is_ok()) << d.message();
  EXPECT_TRUE(d->errors.empty()) << format_issues(d->errors);
  EXPECT_GE(d->items.size(), 60u);
  EXPECT_EQ(d->unsupported.size(), 1u);
  std::map<std::string, int> scenes, formats;
  for (auto& it : d->items) {
    ++scenes[it.scene];
    ++formats[format_name(it.format)];
    EXPECT_EQ(it.category[0], it.scene) << it.id;
  }
  for (auto& s : known_scenes()) EXPECT_GE(scenes[s], 5) << s;
  EXPECT_GE(formats["mcq"], 20);
  EXPECT_GE(formats["open"], 15);
  EXPECT_GE(formats["json"], 10);
  // The pack stays small enough to live in the repository.
  uintmax_t bytes = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(std::filesystem::path(kPack).parent_path()))
    if (e.is_regular_file()) bytes += e.file_size();
  EXPECT_LT(bytes, 1500u * 1024u);
}

TEST(Dataset, UnreadableFile) {
  auto d = load_dataset("/nonexistent/pack.jsonl");
  EXPECT_FALSE(d.is_ok());
}

}  // namespace
}  // namespace ost::eval
