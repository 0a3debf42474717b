// Constrained decoding for structured outputs: a JSON grammar (compiled from a JSON schema or
// "any JSON object") and a byte-level matcher that says which bytes may come next.
//
// The grammar is a graph of value nodes (object, array, string, number, literal set, anyOf)
// read by a deterministic pushdown machine: each frame of the stack is one value being written.
// anyOf branches must start with different bytes (the first byte picks the branch), so the
// machine never guesses; schemas that need lookahead are refused when compiled.
//
// The stack is persistent (frames linked through an arena, a state is one frame and an index),
// so copying a state is cheap: the vocabulary walk (vocab.h) copies one per trie edge.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace ost::grammar {

constexpr uint32_t kNoNode = UINT32_MAX;
constexpr uint32_t kUnbounded = UINT32_MAX;

enum class NodeKind : uint8_t { kObject, kArray, kString, kNumber, kLiteral, kAnyOf };

struct Property {
  std::string key;  // JSON text of the name, quotes included: "\"price\""
  uint32_t value = kNoNode;
  bool required = false;
};

struct Node {
  NodeKind kind = NodeKind::kAnyOf;
  // kObject: the declared properties, written in this order (any optional one may be left out);
  // none declared: a map of any string keys to `item` values (item kNoNode: only {}).
  std::vector<Property> props;
  std::vector<uint32_t> next_required;  // per property index i: the first required one >= i
  // kArray: items; kObject map: values.
  uint32_t item = kNoNode;
  uint32_t min_items = 0, max_items = kUnbounded;
  // kString: length in characters (an escape is one).
  uint32_t min_length = 0, max_length = kUnbounded;
  // kNumber
  bool integer = false;
  // kLiteral: JSON texts, sorted bytewise, distinct, none a prefix of another unless a number.
  std::vector<std::string> literals;
  // kAnyOf: branches, whose first bytes do not overlap.
  std::vector<uint32_t> branches;
  std::array<uint64_t, 4> first{};  // bytes that may start this value
  bool starts_with(uint8_t c) const { return (first[c >> 6] >> (c & 63)) & 1; }
};

struct Grammar {
  std::vector<Node> nodes;
  uint32_t root = kNoNode;
  uint32_t key_string = kNoNode;  // the keys of maps: any string
  int max_depth = 16;             // nested objects and arrays
  int max_whitespace = 8;         // bytes of one whitespace run between tokens (' ', '\n')
  std::string prefix, suffix;     // text written before and after the value (a tool call's tags)
};

struct CompileOptions {
  int max_depth = 16;
  int max_whitespace = 8;
  // Characters of any string whose schema allows more (map keys included): a bound on answers
  // that would otherwise run to max_tokens inside one string.
  uint32_t max_string_length = kUnbounded;
  std::string prefix, suffix;  // Grammar::prefix, suffix
};

// Any JSON object (response_format json_object), nesting bounded by max_depth.
std::shared_ptr<const Grammar> json_object_grammar(const CompileOptions& opt = {});

// A JSON schema (the subset in docs: type, properties, required, additionalProperties, items,
// minItems, maxItems, enum, const, minLength, maxLength, anyOf, oneOf, allOf of one schema,
// $ref to #/$defs or #/definitions; annotations such as title and description are ignored).
// Any other keyword is an error naming it and where it is. Properties keep the schema's order.
Result<std::shared_ptr<const Grammar>> compile_json_schema(const nlohmann::ordered_json& schema,
                                                           const CompileOptions& opt = {});

// One frame of the machine's stack: a value being written.
struct Frame {
  uint32_t node = kNoNode;  // kNoNode: the root (phase 0: prefix, then the value; 1: suffix)
  uint8_t phase = 0;
  uint8_t utf8 = 0;    // kString: the UTF-8 state (utf8_step)
  uint16_t pos = 0;    // kLiteral / object key / root: bytes matched; kNumber: digits of this part
  uint32_t count = 0;  // kString: characters; kArray: items
  uint32_t lo = 0, hi = 0;  // kLiteral: candidate range; kObject: next property, chosen property
  uint64_t keys = 0;        // kObject: properties the key being written may still be
};

struct MatchState {
  Frame top;
  int32_t parent = -1;  // the rest of the stack: an index into the matcher's arena
  uint16_t depth = 0;   // open objects and arrays
  uint8_t ws = 0;       // length of the current whitespace run
};

// UTF-8 inside strings: state 0 is between characters; 1..3 wait for that many continuation
// bytes (80..BF); 4..7 wait for a restricted second byte (after E0, ED, F0, F4). Returns the next
// state or -1. Bytes below 0x80 are not handled here.
int utf8_step(int state, uint8_t c);

class Matcher {
 public:
  explicit Matcher(std::shared_ptr<const Grammar> g);

  // All of `bytes`, or none (the state is then unchanged): false when they cannot continue.
  bool accept(std::string_view bytes);
  bool can_end() const;  // the value is complete: the answer may end here
  bool done() const;     // nothing but the end may follow
  const Grammar& grammar() const { return *g_; }

  // The machine, for the vocabulary walk: step a copy of state(); arena entries past
  // arena_size() are scratch that truncate() drops.
  const MatchState& state() const { return s_; }
  // In the body of a string (not in an escape): its UTF-8 state and how many more characters
  // it may take.
  bool string_body(const MatchState& s, int& utf8, uint32_t& room) const;
  bool step(MatchState& s, uint8_t c);
  bool can_end(MatchState s) const;
  size_t arena_size() const { return arena_.size(); }
  void truncate(size_t n) { arena_.resize(n); }

 private:
  struct Link {
    Frame frame;
    int32_t parent;
  };
  void push(MatchState& s, const Frame& f);
  void pop(MatchState& s) const;
  Frame start(uint32_t node) const;
  bool start_key(MatchState& s, const Node& n);

  std::shared_ptr<const Grammar> g_;
  MatchState s_;
  std::vector<Link> arena_;
};

}  // namespace ost::grammar
