#include "tokenizer/utf8.h"

namespace ost::tok {

namespace {

// Length of the sequence at p[0..n): > 0 a whole valid character of that many bytes;
// 0 a valid prefix cut short by the end of input; -k the first k bytes are a maximal
// invalid subpart (a prefix of no valid sequence can be extended by the byte after it).
// The allowed ranges of the second byte rule out overlong forms, surrogates and > U+10FFFF.
int scan_sequence(const uint8_t* p, size_t n) {
  const uint8_t b0 = p[0];
  if (b0 < 0x80) return 1;
  int need;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 == 0xE0) {
    need = 2, lo = 0xA0;
  } else if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) {
    need = 2;
  } else if (b0 == 0xED) {
    need = 2, hi = 0x9F;
  } else if (b0 == 0xF0) {
    need = 3, lo = 0x90;
  } else if (b0 >= 0xF1 && b0 <= 0xF3) {
    need = 3;
  } else if (b0 == 0xF4) {
    need = 3, hi = 0x8F;
  } else {
    return -1;  // continuation byte without a lead, C0/C1, F5..FF
  }
  for (int i = 1; i <= need; ++i) {
    if (size_t(i) >= n) return 0;
    const uint8_t b = p[i];
    const uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) return -i;
  }
  return need + 1;
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  size_t i = 0, n = s.size();
  while (i < n) {
    // ASCII runs dominate typical text; skip 8 bytes at a time while all are < 0x80.
    while (i + 8 <= n) {
      uint64_t w;
      __builtin_memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    const int len = scan_sequence(p + i, n - i);
    if (len <= 0) return false;
    i += size_t(len);
  }
  return true;
}

size_t append_utf8_lossy(std::string_view in, std::string& out, bool final) {
  const auto* p = reinterpret_cast<const uint8_t*>(in.data());
  size_t i = 0, n = in.size(), run = 0;  // [run, i) is valid text not yet copied
  while (i < n) {
    const int len = scan_sequence(p + i, n - i);
    if (len > 0) {
      i += size_t(len);
      continue;
    }
    out.append(in.data() + run, i - run);
    if (len == 0) {
      if (!final) return i;  // keep the unfinished character for later
      out.append(kReplacement);
      return n;
    }
    out.append(kReplacement);
    i += size_t(-len);
    run = i;
  }
  out.append(in.data() + run, n - run);
  return n;
}

std::string utf8_lossy(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  append_utf8_lossy(in, out, true);
  return out;
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

}  // namespace ost::tok
