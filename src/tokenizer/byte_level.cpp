#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/utf8.h"

namespace ost::tok {

namespace {

struct ByteTables {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 324> from_cp{};  // every mapped code point is below 256 + 68
};

// The table of GPT-2's bytes_to_unicode(): bytes that are printable Latin-1 characters keep
// their code point, the other 68 take U+0100 + k in increasing byte order.
ByteTables make_tables() {
  ByteTables t;
  t.from_cp.fill(-1);
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    t.to_cp[size_t(b)] = printable ? uint32_t(b) : next++;
    t.from_cp[t.to_cp[size_t(b)]] = int16_t(b);
  }
  return t;
}

const ByteTables& tables() {
  static const ByteTables t = make_tables();
  return t;
}

}  // namespace

uint32_t byte_to_codepoint(uint8_t b) { return tables().to_cp[b]; }

int codepoint_to_byte(uint32_t cp) {
  const auto& t = tables().from_cp;
  return cp < t.size() ? t[cp] : -1;
}

std::string bytes_to_token_text(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) append_utf8(byte_to_codepoint(c), out);
  return out;
}

std::optional<std::string> token_text_to_bytes(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  // Only 1- and 2-byte UTF-8 forms can be in the alphabet (all code points are < U+0144).
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    if (p[i] < 0x80) {
      cp = p[i];
      i += 1;
    } else if (p[i] >= 0xC2 && p[i] <= 0xDF && i + 1 < n && (p[i + 1] & 0xC0) == 0x80) {
      cp = (uint32_t(p[i] & 0x1F) << 6) | (p[i + 1] & 0x3F);
      i += 2;
    } else {
      return std::nullopt;
    }
    const int b = codepoint_to_byte(cp);
    if (b < 0) return std::nullopt;
    out.push_back(char(b));
  }
  return out;
}

}  // namespace ost::tok
