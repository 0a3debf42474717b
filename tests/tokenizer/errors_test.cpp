// Loading failures come back as errors with a clear message, never as a crash or exception.
#include <unistd.h>

#include "tokenizer_test_util.h"

namespace ost::test {
namespace {

// A file under the test's temporary directory, removed at the end of the scope.
class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    path_ = ::testing::TempDir() + "tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++) + ".json";
    EXPECT_TRUE(write_file(path_, content).is_ok());
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  static inline int counter_ = 0;
};

std::string load_error(const std::string& content) {
  TempFile f(content);
  auto r = Tokenizer::load(f.path());
  EXPECT_FALSE(r.is_ok());
  return r.is_ok() ? std::string() : r.message();
}

TEST(TokenizerErrors, MissingFile) {
  auto r = Tokenizer::load("/nonexistent/dir/tokenizer.json");
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("/nonexistent/dir/tokenizer.json"), std::string::npos) << r.message();
  EXPECT_NE(r.message().find("does not exist"), std::string::npos) << r.message();
}

TEST(TokenizerErrors, DirectoryInsteadOfFile) {
  auto r = Tokenizer::load(OST_TEST_DATA);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("is a directory"), std::string::npos) << r.message();
}

TEST(TokenizerErrors, InvalidJson) {
  for (const std::string bad : {"", "{", "{\"model\": [1, 2,,]}", "not json at all", "\xFF\xFE{}"}) {
    const std::string msg = load_error(bad);
    EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
    EXPECT_NE(msg.find("tokenizer:"), std::string::npos) << msg;
  }
}

TEST(TokenizerErrors, JsonThatIsNotATokenizer) {
  EXPECT_NE(load_error("[1, 2, 3]").find("not a JSON object"), std::string::npos);
  EXPECT_NE(load_error("{}").find("pre_tokenizer"), std::string::npos);
  EXPECT_NE(load_error(R"({"normalizer": {"type": "NFKC"}})").find("unsupported normalizer"), std::string::npos);
  // A field of the wrong type is reported, not thrown.
  const std::string msg = load_error(R"({"normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": "Sequence",
      "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated",
      "invert": "yes"}, {"type": "ByteLevel"}]}})");
  EXPECT_NE(msg.find("malformed"), std::string::npos) << msg;
}

TEST(TokenizerErrors, EmptyTokenizerIsHarmless) {
  Tokenizer t;
  EXPECT_TRUE(t.encode("hello").empty());
  EXPECT_EQ(t.decode({1, 2, 3}), "");
  EXPECT_EQ(t.vocab_size(), 0);
  EXPECT_EQ(t.token_bytes(0), "");
  EXPECT_FALSE(t.token_id("a").has_value());
  EXPECT_FALSE(t.is_special(0));
  StreamDecoder d(t);
  EXPECT_EQ(d.push(1), "");
  EXPECT_EQ(d.flush(), "");
}

}  // namespace
}  // namespace ost::test
