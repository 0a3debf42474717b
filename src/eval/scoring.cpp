#include "eval/scoring.h"

#include <utf8proc.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <map>
#include <regex>
#include <set>

namespace ost::eval {

namespace {

bool is_cjk(int32_t c) {
  return (c >= 0x2E80 && c <= 0x2FDF) || (c >= 0x3040 && c <= 0x312F) || (c >= 0x3190 && c <= 0x31FF) ||
         (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0xF900 && c <= 0xFAFF) ||
         (c >= 0x20000 && c <= 0x2FA1F);
}

void append_utf8(std::string& s, int32_t c) {
  uint8_t buf[4];
  auto n = utf8proc_encode_char(c, buf);
  s.append(reinterpret_cast<const char*>(buf), size_t(n));
}

// NFKC + case fold; invalid UTF-8 falls back to ASCII lower-casing of the bytes.
std::string fold(std::string_view s) {
  utf8proc_uint8_t* out = nullptr;
  auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()), &out,
                        utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT |
                                          UTF8PROC_CASEFOLD));
  if (n < 0) {
    std::string r(s);
    for (auto& ch : r) ch = char(std::tolower(uint8_t(ch)));
    return r;
  }
  std::string r(reinterpret_cast<char*>(out), size_t(n));
  std::free(out);
  return r;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(uint8_t(s[b]))) ++b;
  while (e > b && std::isspace(uint8_t(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

}  // namespace

std::vector<std::string> answer_tokens(std::string_view s) {
  const std::string f = fold(s);
  std::vector<std::string> toks;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty() && cur != "a" && cur != "an" && cur != "the") toks.push_back(cur);
    cur.clear();
  };
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(f.data());
  utf8proc_ssize_t left = utf8proc_ssize_t(f.size());
  while (left > 0) {
    utf8proc_int32_t c = 0;
    auto n = utf8proc_iterate(p, left, &c);
    if (n <= 0) {  // invalid byte: skip it
      ++p;
      --left;
      continue;
    }
    p += n;
    left -= n;
    const auto cat = utf8proc_category(c);
    const bool punct = cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
    const bool symbol = cat >= UTF8PROC_CATEGORY_SM && cat <= UTF8PROC_CATEGORY_SO;
    const bool space = cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL ||
                       cat == UTF8PROC_CATEGORY_ZP || cat == UTF8PROC_CATEGORY_CC;
    if (punct || symbol) continue;  // SQuAD: punctuation is deleted, not a separator
    if (space) {
      flush();
    } else if (is_cjk(c)) {
      flush();
      append_utf8(cur, c);
      flush();
    } else {
      append_utf8(cur, c);
    }
  }
  flush();
  return toks;
}

std::string normalize_answer(std::string_view s) {
  std::string r;
  for (auto& t : answer_tokens(s)) {
    if (!r.empty()) r += ' ';
    r += t;
  }
  return r;
}

bool exact_match(std::string_view prediction, std::string_view reference) {
  return normalize_answer(prediction) == normalize_answer(reference);
}

double token_f1(std::string_view prediction, std::string_view reference) {
  auto p = answer_tokens(prediction), r = answer_tokens(reference);
  if (p.empty() || r.empty()) return p.empty() && r.empty() ? 1.0 : 0.0;
  std::map<std::string, int> count;
  for (auto& t : r) ++count[t];
  int common = 0;
  for (auto& t : p)
    if (auto it = count.find(t); it != count.end() && it->second > 0) {
      --it->second;
      ++common;
    }
  if (common == 0) return 0.0;
  double prec = double(common) / double(p.size()), rec = double(common) / double(r.size());
  return 2 * prec * rec / (prec + rec);
}

std::string strip_reasoning(std::string_view text) {
  std::string s(text);
  for (;;) {
    size_t b = s.find("<think>");
    if (b == std::string::npos) break;
    size_t e = s.find("</think>", b);
    s.erase(b, e == std::string::npos ? std::string::npos : e + 8 - b);
  }
  // An answer that starts inside the reasoning (the template opened <think> for it).
  if (size_t e = s.find("</think>"); e != std::string::npos) s.erase(0, e + 8);
  return trim(s);
}

bool looks_like_refusal(std::string_view text) {
  static const char* kPhrases[] = {
      "cannot determine", "can't determine", "cannot be determined", "can not determine", "unable to determine",
      "cannot tell", "can't tell", "unable to tell", "not possible to tell", "impossible to tell",
      "impossible to determine", "cannot answer", "can't answer", "unable to answer", "cannot see",
      "can't see", "unable to see", "not visible", "not clear from the image", "no image", "cannot identify",
      "unable to identify", "i'm sorry", "i am sorry", "sorry,", "i cannot", "i can't", "none of the options",
      "none of the choices", "not enough information", "insufficient information",
      "无法", "不能确定", "看不清", "不确定", "抱歉", "对不起"};
  const std::string f = fold(text);
  for (const char* p : kPhrases)
    if (f.find(p) != std::string::npos) return true;
  return false;
}

namespace {

bool letter_ok(char c, size_t n) {
  if (!std::isalpha(uint8_t(c))) return false;
  return size_t(std::toupper(uint8_t(c)) - 'A') < n;
}
int letter_index(char c) { return std::toupper(uint8_t(c)) - 'A'; }

// "A bottle", "I think", "a few": an English word, not an option letter.
bool reads_as_word(const std::string& t, size_t pos) {
  const char c = t[pos];
  if (c != 'A' && c != 'a' && c != 'I' && c != 'i') return false;
  size_t k = pos + 1;
  if (k >= t.size() || (t[k] != ' ' && t[k] != '\'')) return false;
  while (k < t.size() && (t[k] == ' ' || t[k] == '\'')) ++k;
  if (k >= t.size() || !std::islower(uint8_t(t[k]))) return false;
  // "A or B", "A and C": letters joined by a conjunction are options.
  for (const char* conj : {"or ", "and ", "nor "})
    if (t.compare(k, std::strlen(conj), conj) == 0) return false;
  return true;
}

// Token-level containment: is `needle` a contiguous run of `hay`?
bool contains_run(const std::vector<std::string>& hay, const std::vector<std::string>& needle) {
  if (needle.empty() || needle.size() > hay.size()) return false;
  for (size_t i = 0; i + needle.size() <= hay.size(); ++i)
    if (std::equal(needle.begin(), needle.end(), hay.begin() + long(i))) return true;
  return false;
}

}  // namespace

ChoiceResult extract_choice(std::string_view answer, const std::vector<std::string>& choices) {
  ChoiceResult r;
  const size_t n = choices.size();
  const std::string t = strip_reasoning(answer);

  // 1. The whole answer is one letter, maybe wrapped: "B", "(b)", "**C**", "D.", "'A'".
  {
    std::string core = t;
    auto wrap = [](char c) { return std::isspace(uint8_t(c)) || std::strchr("()[]{}*_'\"`.:,;!", c); };
    while (!core.empty() && wrap(core.front())) core.erase(0, 1);
    while (!core.empty() && wrap(core.back())) core.pop_back();
    for (const char* pre : {"option ", "Option ", "OPTION ", "choice ", "Choice "})
      if (core.rfind(pre, 0) == 0) core = trim(core.substr(std::strlen(pre)));
    if (core.size() == 1 && letter_ok(core[0], n)) {
      r.index = letter_index(core[0]);
      return r;
    }
  }

  // 2. An explicit statement; the last one wins (a conclusion follows its reasoning).
  static const std::regex kAnswer(
      R"((?:\banswer\b|\bans\b|答案|选项|选择|应选|选)\s*(?:is|should be|would be|[:：]|是|为)?\s*[:：]?\s*)"
      R"((?:\boption\b|\bchoice\b)?\s*(?:\(|\[|（)?\s*([A-Za-z])(?![A-Za-z]))",
      std::regex::icase);
  int explicit_idx = -1;
  for (auto it = std::sregex_iterator(t.begin(), t.end(), kAnswer); it != std::sregex_iterator(); ++it) {
    const auto& m = *it;
    const size_t pos = size_t(m.position(1));
    const char c = t[pos];
    const bool bracketed = pos > 0 && (t[pos - 1] == '(' || t[pos - 1] == '[');
    if (!letter_ok(c, n) || (!bracketed && reads_as_word(t, pos))) continue;
    explicit_idx = letter_index(c);
  }
  if (explicit_idx >= 0) {
    r.index = explicit_idx;
    return r;
  }
  static const std::regex kOption(R"(\b(?:option|choice)\b\s*(?:\(|\[)?\s*([A-Za-z])(?![A-Za-z]))", std::regex::icase);
  std::set<int> named;
  for (auto it = std::sregex_iterator(t.begin(), t.end(), kOption); it != std::sregex_iterator(); ++it)
    if (letter_ok(t[size_t(it->position(1))], n)) named.insert(letter_index(t[size_t(it->position(1))]));
  if (named.size() == 1) {
    r.index = *named.begin();
    return r;
  }

  // 3. A letter leading the answer: "C. 3 bottles", "b) three", "(D) none".
  static const std::regex kLead(R"(^[\s*]*(?:\(|\[)?([A-Za-z])(?:\)|\]|\.|:|：|,)(?![A-Za-z]))");
  if (std::smatch m; std::regex_search(t, m, kLead) && letter_ok(t[size_t(m.position(1))], n)) {
    r.index = letter_index(t[size_t(m.position(1))]);
    return r;
  }

  // 4. Bracketed letters "(C)" anywhere, then stand-alone capitals: one distinct letter only.
  static const std::regex kBracket(R"((?:\(|\[|（)([A-Za-z])(?:\)|\]|）))");
  std::set<int> br;
  for (auto it = std::sregex_iterator(t.begin(), t.end(), kBracket); it != std::sregex_iterator(); ++it)
    if (letter_ok(t[size_t(it->position(1))], n)) br.insert(letter_index(t[size_t(it->position(1))]));
  if (br.size() == 1) {
    r.index = *br.begin();
    return r;
  }
  std::set<int> caps;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (!std::isupper(uint8_t(c)) || !letter_ok(c, n)) continue;
    if (i > 0 && std::isalnum(uint8_t(t[i - 1]))) continue;
    if (i + 1 < t.size() && (std::isalnum(uint8_t(t[i + 1])) || t[i + 1] == '\'' || t[i + 1] == '-')) continue;
    if (reads_as_word(t, i)) continue;
    caps.insert(letter_index(c));
  }
  if (caps.size() == 1 && br.empty()) {
    r.index = *caps.begin();
    return r;
  }
  const bool letters_conflict = caps.size() > 1 || br.size() > 1;

  // 5. The text of exactly one option (the longest wins over options it contains).
  const auto ans = answer_tokens(t);
  std::vector<std::vector<std::string>> opt(n);
  for (size_t i = 0; i < n; ++i) opt[i] = answer_tokens(choices[i]);
  for (size_t i = 0; i < n; ++i)
    if (!opt[i].empty() && opt[i] == ans) {
      r.index = int(i);
      return r;
    }
  std::vector<size_t> hits;
  for (size_t i = 0; i < n; ++i)
    if (contains_run(ans, opt[i])) hits.push_back(i);
  std::vector<size_t> kept;
  for (size_t i : hits) {
    bool inside_other = false;
    for (size_t j : hits)
      if (j != i && opt[j].size() > opt[i].size() && contains_run(opt[j], opt[i])) inside_other = true;
    if (!inside_other) kept.push_back(i);
  }
  if (kept.size() == 1 && !letters_conflict) {
    r.index = int(kept[0]);
    return r;
  }
  r.ambiguous = kept.size() > 1 || letters_conflict;
  r.refusal = looks_like_refusal(t);
  return r;
}

}  // namespace ost::eval
