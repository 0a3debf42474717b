#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace ost::tok {

namespace {

// Unicode White_Space (Oniguruma's \s for UTF-8), as PCRE2 class items.
constexpr std::string_view kWhiteSpaceItems =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof buf) < 0) return "PCRE2 error " + std::to_string(code);
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

Result<std::string> rewrite_whitespace_classes(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 256);
  bool in_class = false;
  size_t class_start = 0;  // index in `pattern` just after "[" or "[^"
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      ++i;
      if (e == 's') {
        if (in_class) {
          out.append(kWhiteSpaceItems);
        } else {
          out.append("[").append(kWhiteSpaceItems).append("]");
        }
      } else if (e == 'S') {
        if (in_class) return make_error("tokenizer regex: \\S inside a character class is not supported");
        out.append("[^").append(kWhiteSpaceItems).append("]");
      } else {
        out.push_back('\\');
        out.push_back(e);
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out.push_back(pattern[++i]);
      class_start = i + 1;
      continue;
    }
    // A ']' right at the start of a class is a literal, not its end.
    if (in_class && c == ']' && i != class_start) in_class = false;
    if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      return make_error("tokenizer regex: POSIX classes are not supported");
    }
    out.push_back(c);
  }
  if (in_class) return make_error("tokenizer regex: unterminated character class");
  return out;
}

struct PreTokenizer::Compiled {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Compiled() { pcre2_code_free(code); }
};

Result<PreTokenizer> PreTokenizer::create(std::string_view pattern) {
  auto rewritten = rewrite_whitespace_classes(pattern);
  if (!rewritten) return rewritten.status();
  int err = 0;
  PCRE2_SIZE err_off = 0;
  auto compiled = std::make_shared<Compiled>();
  compiled->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten->data()), rewritten->size(),
                                 PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
  if (!compiled->code) {
    return make_error("tokenizer regex does not compile at offset %zu: %s", size_t(err_off),
                      pcre2_message(err).c_str());
  }
  // Without JIT matching still works, only slower.
  compiled->jit = pcre2_jit_compile(compiled->code, PCRE2_JIT_COMPLETE) == 0;
  PreTokenizer p;
  p.re_ = std::move(compiled);
  return p;
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  if (text.empty()) return;
  if (!re_) {
    pieces.push_back(text);
    return;
  }
  // Match data is per call so that one PreTokenizer can serve many threads.
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(re_->code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();
  size_t pos = 0, last = 0;  // last: end of the previous piece
  bool use_jit = re_->jit;
  while (pos < n) {
    int rc;
    if (use_jit) {
      rc = pcre2_jit_match(re_->code, subject, n, pos, 0, md, nullptr);
      if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {  // e.g. the JIT stack limit: the interpreter has none
        use_jit = false;
        continue;
      }
    } else {
      rc = pcre2_match(re_->code, subject, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, nullptr);
    }
    if (rc < 0) break;  // no further match (or a matcher error): the rest is one gap piece
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t s = ov[0], e = ov[1];
    if (e == s) {
      // An empty match yields no piece; step over one whole character.
      pos = s + 1;
      while (pos < n && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
      continue;
    }
    if (s > last) pieces.push_back(text.substr(last, s - last));
    pieces.push_back(text.substr(s, e - s));
    last = pos = e;
  }
  if (last < n) pieces.push_back(text.substr(last));
  pcre2_match_data_free(md);
}

}  // namespace ost::tok
