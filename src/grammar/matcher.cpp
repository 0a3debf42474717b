// The byte-level pushdown machine over a compiled grammar (grammar.h).
#include <algorithm>

#include "grammar/grammar.h"

namespace ost::grammar {

namespace {

// Phases per node kind.
enum : uint8_t { kRootBefore = 0, kRootAfter = 1 };
enum : uint8_t { kObjOpen, kObjFirst, kObjKey, kObjColon, kObjValue, kObjNext, kObjComma };
enum : uint8_t { kArrOpen, kArrFirst, kArrNext, kArrComma };
enum : uint8_t { kStrOpen, kStrBody, kStrEscape, kStrHex1, kStrHex2, kStrHex3, kStrHex4 };
enum : uint8_t { kNumStart, kNumMinus, kNumZero, kNumInt, kNumFrac0, kNumFrac, kNumExp0, kNumExpSign, kNumExp };

// Digits per part of a number: integers stay exact in a double, exponents finite.
constexpr uint16_t kMaxIntDigits = 15, kMaxFracDigits = 15, kMaxExpDigits = 2;

bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
bool is_hex(uint8_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_ws(uint8_t c) { return c == ' ' || c == '\n'; }

// A number may end here (the next byte belongs to what follows it).
bool number_complete(uint8_t phase) {
  return phase == kNumZero || phase == kNumInt || phase == kNumFrac || phase == kNumExp;
}

}  // namespace

int utf8_step(int state, uint8_t c) {
  const bool cont = c >= 0x80 && c <= 0xBF;
  switch (state) {
    case 0:
      if (c >= 0xC2 && c <= 0xDF) return 1;
      if (c == 0xE0) return 4;
      if (c == 0xED) return 5;
      if (c >= 0xE1 && c <= 0xEF) return 2;
      if (c == 0xF0) return 6;
      if (c >= 0xF1 && c <= 0xF3) return 3;
      if (c == 0xF4) return 7;
      return -1;
    case 1: case 2: case 3: return cont ? state - 1 : -1;
    case 4: return c >= 0xA0 && c <= 0xBF ? 1 : -1;
    case 5: return c >= 0x80 && c <= 0x9F ? 1 : -1;
    case 6: return c >= 0x90 && c <= 0xBF ? 2 : -1;
    case 7: return c >= 0x80 && c <= 0x8F ? 2 : -1;
  }
  return -1;
}

Matcher::Matcher(std::shared_ptr<const Grammar> g) : g_(std::move(g)) {}

void Matcher::push(MatchState& s, const Frame& f) {
  arena_.push_back({s.top, s.parent});
  s.parent = int32_t(arena_.size() - 1);
  s.top = f;
}

void Matcher::pop(MatchState& s) const {
  const Link& l = arena_[size_t(s.parent)];
  s.top = l.frame;
  s.parent = l.parent;
}

Frame Matcher::start(uint32_t node) const {
  Frame f;
  f.node = node;
  if (g_->nodes[node].kind == NodeKind::kLiteral) f.hi = uint32_t(g_->nodes[node].literals.size());
  return f;
}

// At a '"' that opens a key: the properties it may name are those from the next one up to the
// first required one (the ones between are optional and may be skipped).
bool Matcher::start_key(MatchState& s, const Node& n) {
  Frame& f = s.top;
  if (n.props.empty()) {  // a map
    if (n.item == kNoNode) return false;
    f.phase = kObjColon;
    push(s, start(g_->key_string));
    s.top.phase = kStrBody;  // the '"' is consumed
    return true;
  }
  const uint32_t np = uint32_t(n.props.size());
  if (f.lo >= np) return false;
  const uint32_t last = std::min(n.next_required[f.lo], np - 1);
  f.keys = 0;
  for (uint32_t i = f.lo; i <= last; ++i) f.keys |= uint64_t(1) << i;
  f.pos = 1;  // every key starts with '"'
  f.phase = kObjKey;
  return true;
}

bool Matcher::step(MatchState& s, uint8_t c) {
  const bool ws = is_ws(c);
  if (!ws) s.ws = 0;
  auto gap = [&] {  // whitespace between tokens, a bounded run
    if (s.ws >= g_->max_whitespace) return false;
    ++s.ws;
    return true;
  };
  for (;;) {
    Frame& f = s.top;
    if (f.node == kNoNode) {  // the root: prefix, value, suffix
      const std::string& text = f.phase == kRootBefore ? g_->prefix : g_->suffix;
      if (f.pos < text.size()) {
        if (uint8_t(text[f.pos]) != c) return false;
        ++f.pos;
        return true;
      }
      if (f.phase == kRootAfter) return false;
      f.phase = kRootAfter;
      f.pos = 0;
      push(s, start(g_->root));
      continue;
    }
    const Node& n = g_->nodes[f.node];
    switch (n.kind) {
      case NodeKind::kAnyOf: {
        uint32_t pick = kNoNode;
        for (uint32_t b : n.branches)
          if (g_->nodes[b].starts_with(c)) pick = b;
        if (pick == kNoNode) return false;
        f = start(pick);
        continue;
      }
      case NodeKind::kObject: {
        const bool map = n.props.empty();
        const uint32_t np = uint32_t(n.props.size());
        const bool can_close = map || n.next_required[std::min(f.lo, np)] >= np;
        switch (f.phase) {
          case kObjOpen:
            if (c != '{' || s.depth >= g_->max_depth) return false;
            ++s.depth;
            f.phase = kObjFirst;
            return true;
          case kObjFirst:
          case kObjComma:
            if (ws) return gap();
            if (c == '"') return start_key(s, n);
            if (c == '}' && f.phase == kObjFirst && can_close) {
              --s.depth;
              pop(s);
              return true;
            }
            return false;
          case kObjKey: {
            uint64_t keep = 0;
            int32_t done = -1;
            for (uint64_t m = f.keys; m; m &= m - 1) {
              const int i = __builtin_ctzll(m);
              const std::string& k = n.props[size_t(i)].key;
              if (k.size() > f.pos && uint8_t(k[f.pos]) == c) {
                keep |= uint64_t(1) << i;
                if (k.size() == size_t(f.pos) + 1) done = i;
              }
            }
            if (!keep) return false;
            f.keys = keep;
            ++f.pos;
            if (done >= 0) {  // keys are quoted: the one that ended is the only one left
              f.hi = uint32_t(done);
              f.lo = uint32_t(done) + 1;
              f.phase = kObjColon;
            }
            return true;
          }
          case kObjColon:
            if (ws) return gap();
            if (c != ':') return false;
            f.phase = kObjValue;
            return true;
          case kObjValue: {
            if (ws) return gap();
            f.phase = kObjNext;
            push(s, start(map ? n.item : n.props[f.hi].value));
            continue;
          }
          case kObjNext:
            if (ws) return gap();
            if (c == ',' && (map || f.lo < np)) {
              f.phase = kObjComma;
              return true;
            }
            if (c == '}' && can_close) {
              --s.depth;
              pop(s);
              return true;
            }
            return false;
        }
        return false;
      }
      case NodeKind::kArray:
        switch (f.phase) {
          case kArrOpen:
            if (c != '[' || s.depth >= g_->max_depth) return false;
            ++s.depth;
            f.phase = kArrFirst;
            return true;
          case kArrFirst:
          case kArrComma:
            if (ws) return gap();
            if (c == ']' && f.phase == kArrFirst) {
              if (n.min_items > 0) return false;
              --s.depth;
              pop(s);
              return true;
            }
            if (f.count >= n.max_items) return false;
            ++f.count;
            f.phase = kArrNext;
            push(s, start(n.item));
            continue;
          case kArrNext:
            if (ws) return gap();
            if (c == ',' && f.count < n.max_items) {
              f.phase = kArrComma;
              return true;
            }
            if (c == ']' && f.count >= n.min_items) {
              --s.depth;
              pop(s);
              return true;
            }
            return false;
        }
        return false;
      case NodeKind::kString:
        switch (f.phase) {
          case kStrOpen:
            if (c != '"') return false;
            f.phase = kStrBody;
            return true;
          case kStrBody:
            if (f.utf8) {
              const int u = utf8_step(f.utf8, c);
              if (u < 0) return false;
              f.utf8 = uint8_t(u);
              return true;
            }
            if (c == '"') {
              if (f.count < n.min_length) return false;
              pop(s);
              return true;
            }
            if (c < 0x20 || f.count >= n.max_length) return false;
            if (c >= 0x80) {
              const int u = utf8_step(0, c);
              if (u < 0) return false;
              f.utf8 = uint8_t(u);
            } else if (c == '\\') {
              f.phase = kStrEscape;
            }
            ++f.count;
            return true;
          case kStrEscape:
            if (c == 'u') {
              f.phase = kStrHex1;
              return true;
            }
            if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' && c != 'n' && c != 'r' && c != 't')
              return false;
            f.phase = kStrBody;
            return true;
          default:  // \uXXXX; no surrogates (\uD800..\uDFFF: they must pair), so no \uD...
            if (!is_hex(c) || (f.phase == kStrHex1 && (c == 'd' || c == 'D'))) return false;
            f.phase = f.phase == kStrHex4 ? uint8_t(kStrBody) : uint8_t(f.phase + 1);
            return true;
        }
      case NodeKind::kNumber: {
        const bool frac_ok = !n.integer;
        switch (f.phase) {
          case kNumStart:
            if (c == '-') {
              f.phase = kNumMinus;
              return true;
            }
            [[fallthrough]];
          case kNumMinus:
            if (c == '0') {
              f.phase = kNumZero;
              return true;
            }
            if (c < '1' || c > '9') return false;
            f.phase = kNumInt;
            f.pos = 1;
            return true;
          case kNumInt:
          case kNumFrac:
          case kNumExp:
            if (is_digit(c)) {
              const uint16_t cap = f.phase == kNumInt ? kMaxIntDigits : f.phase == kNumFrac ? kMaxFracDigits
                                                                                           : kMaxExpDigits;
              if (f.pos >= cap) return false;
              ++f.pos;
              return true;
            }
            [[fallthrough]];
          case kNumZero:
            if (c == '.' && frac_ok && (f.phase == kNumZero || f.phase == kNumInt)) {
              f.phase = kNumFrac0;
              return true;
            }
            if ((c == 'e' || c == 'E') && frac_ok && f.phase != kNumExp) {
              f.phase = kNumExp0;
              return true;
            }
            pop(s);  // the number ends before c
            continue;
          case kNumFrac0:
          case kNumExpSign:
            if (!is_digit(c)) return false;
            f.phase = f.phase == kNumFrac0 ? kNumFrac : kNumExp;
            f.pos = 1;
            return true;
          case kNumExp0:
            if (c == '+' || c == '-') {
              f.phase = kNumExpSign;
              return true;
            }
            if (!is_digit(c)) return false;
            f.phase = kNumExp;
            f.pos = 1;
            return true;
        }
        return false;
      }
      case NodeKind::kLiteral: {
        // [lo, hi) share the first pos bytes; those going on with c are contiguous (sorted).
        uint32_t a = f.lo;
        while (a < f.hi && (n.literals[a].size() <= f.pos || uint8_t(n.literals[a][f.pos]) < c)) ++a;
        uint32_t b = a;
        while (b < f.hi && n.literals[b].size() > f.pos && uint8_t(n.literals[b][f.pos]) == c) ++b;
        if (a < b) {
          f.lo = a;
          f.hi = b;
          ++f.pos;
          return true;
        }
        if (n.literals[f.lo].size() != f.pos) return false;
        pop(s);  // a whole literal (a number such as 1 of {1, 12}) ends before c
        continue;
      }
    }
    return false;
  }
}

bool Matcher::can_end(MatchState s) const {
  for (;;) {
    const Frame& f = s.top;
    if (f.node == kNoNode) return f.phase == kRootAfter && f.pos == g_->suffix.size();
    const Node& n = g_->nodes[f.node];
    const bool complete = (n.kind == NodeKind::kNumber && number_complete(f.phase)) ||
                          (n.kind == NodeKind::kLiteral && f.pos > 0 && n.literals[f.lo].size() == f.pos);
    if (!complete) return false;
    pop(s);
  }
}

bool Matcher::can_end() const { return can_end(s_); }

bool Matcher::string_body(const MatchState& s, int& utf8, uint32_t& room) const {
  if (s.top.node == kNoNode) return false;
  const Node& n = g_->nodes[s.top.node];
  if (n.kind != NodeKind::kString || s.top.phase != kStrBody) return false;
  utf8 = s.top.utf8;
  room = n.max_length == kUnbounded ? kUnbounded : n.max_length - s.top.count;
  return true;
}

bool Matcher::done() const {
  return s_.top.node == kNoNode && s_.top.phase == kRootAfter && s_.top.pos == g_->suffix.size();
}

bool Matcher::accept(std::string_view bytes) {
  MatchState t = s_;
  const size_t mark = arena_.size();
  for (char c : bytes)
    if (!step(t, uint8_t(c))) {
      arena_.resize(mark);
      return false;
    }
  s_ = t;
  return true;
}

}  // namespace ost::grammar
