// StreamDecoder: never emits part of a character, and adds up to Tokenizer::decode.
#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"
#include "tokenizer_test_util.h"

namespace ost::test {
namespace {

// Id of the single-byte token for `b`.
int32_t byte_token(const Tokenizer& t, uint8_t b) {
  auto id = t.token_id(tok::bytes_to_token_text(std::string(1, char(b))));
  EXPECT_TRUE(id.has_value());
  return id.value_or(-1);
}

// Streams `ids`, checking that each piece is valid UTF-8; returns the concatenation.
std::string stream_all(const Tokenizer& t, const std::vector<int32_t>& ids, bool skip_special,
                       std::vector<std::string>* pieces = nullptr) {
  StreamDecoder d(t, skip_special);
  std::string all;
  for (int32_t id : ids) {
    std::string s = d.push(id);
    EXPECT_TRUE(tok::is_valid_utf8(s)) << "partial UTF-8 after id " << id;
    if (pieces) pieces->push_back(s);
    all += s;
  }
  std::string rest = d.flush();
  EXPECT_TRUE(tok::is_valid_utf8(rest));
  if (pieces) pieces->push_back(rest);
  return all + rest;
}

TEST_F(Qwen3TokenizerTest, StreamHoldsSplitEmojiUntilComplete) {
  // " 🛒" is encoded as [" \xF0\x9F", "\x9B", "\x92"] (see the fixture's emoji case).
  const std::vector<int32_t> ids = {11162, 249, 240};
  ASSERT_EQ(tok().encode(" \xF0\x9F\x9B\x92"), ids);
  std::vector<std::string> pieces;
  EXPECT_EQ(stream_all(tok(), ids, false, &pieces), " \xF0\x9F\x9B\x92");
  ASSERT_EQ(pieces.size(), 4u);
  EXPECT_EQ(pieces[0], " ");
  EXPECT_EQ(pieces[1], "");
  EXPECT_EQ(pieces[2], "\xF0\x9F\x9B\x92");
  EXPECT_EQ(pieces[3], "");
}

TEST_F(Qwen3TokenizerTest, StreamMatchesDecodeOnMultibyteText) {
  const std::vector<std::string> texts = {
      "emoji \xF0\x9F\x9B\x92\xF0\x9F\x8D\x9C\xF0\x9F\xA5\xA4 and ZWJ \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9"
      "\xE2\x80\x8D\xF0\x9F\x91\xA7 mixed",
      "\xE8\xBF\x99\xE4\xB8\xAA\xE5\xBA\x97\xE9\x93\xBA\xE7\x9A\x84\xE5\x8D\xAB\xE7\x94\x9F",  // Chinese
      "\xF0\x9F\x87\xBA\xF0\x9F\x87\xB8\xF0\x9F\x87\xAF\xF0\x9F\x87\xB5 flags",
      "<|im_start|>user\n\xF0\x9F\x98\x80<think>x</think><|im_end|>",
  };
  for (const auto& text : texts) {
    const auto ids = tok().encode(text);
    EXPECT_EQ(stream_all(tok(), ids, false), tok().decode(ids)) << text;
    EXPECT_EQ(stream_all(tok(), ids, true), tok().decode(ids, true)) << text;
  }
}

TEST_F(Qwen3TokenizerTest, StreamMatchesDecodeOnCorpus) {
  const auto golden = read_json_file(std::string(OST_TEST_DATA) + "/tokenizer_corpus_golden.json");
  ASSERT_TRUE(golden.contains("items"));
  for (const auto& it : golden["items"]) {
    const auto ids = it["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(stream_all(tok(), ids, false), tok().decode(ids));
    EXPECT_EQ(stream_all(tok(), ids, true), tok().decode(ids, true));
  }
}

TEST_F(Qwen3TokenizerTest, StreamReplacesInvalidBytesLikeDecode) {
  const int32_t f0 = byte_token(tok(), 0xF0), x9f = byte_token(tok(), 0x9F), x80 = byte_token(tok(), 0x80);
  const int32_t a = tok().encode("a")[0];
  const std::string fffd = "\xEF\xBF\xBD";
  {
    // An unfinished character is held, then becomes U+FFFD at flush.
    StreamDecoder d(tok());
    EXPECT_EQ(d.push(f0), "");
    EXPECT_EQ(d.push(x9f), "");
    EXPECT_EQ(d.flush(), fffd);
    EXPECT_EQ(tok().decode({f0, x9f}), fffd);  // one U+FFFD for the maximal subpart
  }
  {
    // A lone continuation byte can never complete: replaced at once.
    StreamDecoder d(tok());
    EXPECT_EQ(d.push(x80), fffd);
    EXPECT_EQ(d.flush(), "");
  }
  {
    // A broken sequence followed by ASCII: the ASCII breaks it, both come out together.
    StreamDecoder d(tok());
    EXPECT_EQ(d.push(f0), "");
    EXPECT_EQ(d.push(a), fffd + "a");
    EXPECT_EQ(tok().decode({f0, a}), fffd + "a");
  }
  {
    // Special tokens between the bytes of one character: dropped with skip_special, so the
    // character survives; kept otherwise, so it is broken, in both decode and the stream.
    const std::vector<int32_t> ids = {11162, 249, 151645, 240};
    EXPECT_EQ(stream_all(tok(), ids, true), " \xF0\x9F\x9B\x92");
    EXPECT_EQ(tok().decode(ids, true), " \xF0\x9F\x9B\x92");
    EXPECT_EQ(stream_all(tok(), ids, false), tok().decode(ids, false));
    EXPECT_EQ(tok().decode(ids, false), " " + fffd + "<|im_end|>" + fffd);
  }
  {
    // Out-of-range ids add nothing, in both.
    StreamDecoder d(tok());
    EXPECT_EQ(d.push(-1), "");
    EXPECT_EQ(d.push(1 << 30), "");
    EXPECT_EQ(tok().decode({-1, a, 1 << 30}), "a");
  }
}

}  // namespace
}  // namespace ost::test
