// HTTP/1.1 request parsing and chunked decoding on byte strings; base64.
#include <gtest/gtest.h>

#include "server/http.h"
#include "server/openai.h"

namespace ost::http {
namespace {

HeadResult parse(const std::string& s, Request& r, ParseLimits lim = {}) { return parse_head(s, r, lim); }

TEST(HttpParse, SimpleGet) {
  Request r;
  auto h = parse("GET /v1/models?x=1 HTTP/1.1\r\nHost: a\r\nX-Thing:  v  \r\n\r\nrest", r);
  ASSERT_EQ(h.state, ParseState::kDone);
  EXPECT_EQ(h.consumed, std::string("GET /v1/models?x=1 HTTP/1.1\r\nHost: a\r\nX-Thing:  v  \r\n\r\n").size());
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.path, "/v1/models");
  EXPECT_EQ(r.query, "x=1");
  EXPECT_EQ(r.header("x-thing"), "v");
  EXPECT_TRUE(r.keep_alive());
}

TEST(HttpParse, NeedsMoreUntilBlankLine) {
  Request r;
  EXPECT_EQ(parse("GET / HTTP/1.1\r\nHost: a\r\n", r).state, ParseState::kNeedMore);
  EXPECT_EQ(parse("", r).state, ParseState::kNeedMore);
}

TEST(HttpParse, LeadingEmptyLinesAreSkipped) {
  Request r;
  EXPECT_EQ(parse("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", r).state, ParseState::kDone);
}

TEST(HttpParse, KeepAliveRules) {
  Request r;
  parse("GET / HTTP/1.0\r\n\r\n", r);
  EXPECT_FALSE(r.keep_alive());
  parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", r);
  EXPECT_TRUE(r.keep_alive());
  parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n", r);
  EXPECT_FALSE(r.keep_alive());
}

TEST(HttpParse, Errors) {
  struct Case {
    const char* text;
    int status;
  } cases[] = {
      {"GET /\r\n\r\n", 400},                                              // no version
      {"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n", 400},                    // too many parts
      {"GET noslash HTTP/1.1\r\nHost: a\r\n\r\n", 400},                    // bad target
      {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},                          // version
      {"GET / HTTP/1.1\r\n\r\n", 400},                                     // no Host in 1.1
      {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},                          // bad method
      {"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400},               // obs-fold
      {"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400},               // malformed field
      {"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400},           // space in name
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},  // negative length
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n", 413},
      {"GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", 400},  // control character
  };
  for (auto& c : cases) {
    Request r;
    auto h = parse(c.text, r);
    EXPECT_EQ(h.state, ParseState::kError) << c.text;
    EXPECT_EQ(h.status, c.status) << c.text;
  }
}

TEST(HttpParse, DuplicateEqualContentLengthIsAccepted) {
  Request r;
  auto h = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n", r);
  ASSERT_EQ(h.state, ParseState::kDone);
  EXPECT_EQ(h.content_length, 3);
}

TEST(HttpParse, HeaderTooLarge) {
  Request r;
  ParseLimits lim;
  lim.max_header_bytes = 64;
  EXPECT_EQ(parse("GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(100, 'a'), r, lim).status, 431);
  EXPECT_EQ(parse("GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(100, 'a') + "\r\n\r\n", r, lim).status, 431);
}

TEST(HttpChunked, DecodesWithExtensionsAndTrailers) {
  std::string out;
  auto r = decode_chunked("4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT", out, 1000);
  ASSERT_EQ(r.state, ParseState::kDone);
  EXPECT_EQ(out, "Wikipedia in\r\n\r\nchunks.");
  EXPECT_EQ(std::string("4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n").size(),
            r.consumed);
}

TEST(HttpChunked, PartialAndErrors) {
  std::string out;
  EXPECT_EQ(decode_chunked("4\r\nWi", out, 100).state, ParseState::kNeedMore);
  EXPECT_EQ(decode_chunked("4\r\nWiki\r\n0\r\n", out, 100).state, ParseState::kNeedMore);
  EXPECT_EQ(decode_chunked("zz\r\n", out, 100).state, ParseState::kError);
  EXPECT_EQ(decode_chunked("4\r\nWikiXX0\r\n\r\n", out, 100).state, ParseState::kError);
  auto big = decode_chunked("ff\r\n", out, 100);
  EXPECT_EQ(big.state, ParseState::kError);
  EXPECT_EQ(big.status, 413);
}

TEST(Base64, DecodesAndRejects) {
  std::string out;
  EXPECT_TRUE(server::base64_decode("aGVsbG8=", out));
  EXPECT_EQ(out, "hello");
  EXPECT_TRUE(server::base64_decode("aGVsbG8", out));  // padding optional
  EXPECT_EQ(out, "hello");
  EXPECT_FALSE(server::base64_decode("aGV$bG8=", out));
  EXPECT_FALSE(server::base64_decode("a", out));
}

}  // namespace
}  // namespace ost::http
