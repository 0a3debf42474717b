// JSON schema -> grammar nodes (grammar.h). Only keywords the machine enforces are accepted;
// annotations are skipped; anything else is an error that names the keyword and its place.
#include <algorithm>
#include <map>
#include <set>

#include "grammar/grammar.h"

namespace ost::grammar {

namespace {

using ojson = nlohmann::ordered_json;

struct CompileError {
  std::string message;
};

[[noreturn]] void fail(const std::string& path, const std::string& what) { throw CompileError{path + ": " + what}; }

const std::set<std::string> kAnnotations = {"title",   "description", "$schema",  "$id",       "$comment",
                                            "examples", "default",    "deprecated", "readOnly", "writeOnly",
                                            "$defs",   "definitions"};
const std::set<std::string> kKeywords = {"type",     "properties", "required",  "additionalProperties",
                                         "items",    "minItems",   "maxItems",  "enum",
                                         "const",    "minLength",  "maxLength", "anyOf",
                                         "oneOf",    "allOf",      "$ref",      "uniqueItems"};

class Compiler {
 public:
  Compiler(const ojson& root, const CompileOptions& opt) : root_(root), max_string_(opt.max_string_length) {
    g_.max_depth = opt.max_depth;
    g_.max_whitespace = opt.max_whitespace;
    g_.prefix = opt.prefix;
    g_.suffix = opt.suffix;
    Node key;
    key.kind = NodeKind::kString;
    key.max_length = max_string_;
    g_.key_string = add(std::move(key));
  }

  Grammar finish(uint32_t root) {
    g_.root = root;
    first_sets();
    return std::move(g_);
  }

  uint32_t value(const ojson& s, const std::string& path) {
    if (s.is_boolean()) {
      if (!s.get<bool>()) fail(path, "the schema false accepts no value");
      return any();
    }
    if (!s.is_object()) fail(path, "a schema must be an object or a boolean");
    for (auto it = s.begin(); it != s.end(); ++it)
      if (!kAnnotations.count(it.key()) && !kKeywords.count(it.key()))
        fail(path, "unsupported JSON schema keyword '" + it.key() + "'");
    if (s.contains("uniqueItems") && s["uniqueItems"] != false)
      fail(path, "unsupported JSON schema keyword 'uniqueItems' (only false)");
    auto only = [&](const char* kw) {  // kw with nothing else but annotations
      for (auto it = s.begin(); it != s.end(); ++it)
        if (it.key() != kw && !kAnnotations.count(it.key()))
          fail(path, std::string("'") + kw + "' together with '" + it.key() + "' is not supported");
    };
    if (s.contains("$ref")) {
      only("$ref");
      return ref(s["$ref"], path);
    }
    if (s.contains("allOf")) {
      only("allOf");
      const ojson& a = s["allOf"];
      if (!a.is_array() || a.size() != 1) fail(path, "'allOf' is supported with exactly one schema");
      return value(a[0], path + "/allOf/0");
    }
    for (const char* kw : {"anyOf", "oneOf"})
      if (s.contains(kw)) {
        only(kw);
        return any_of(s[kw], kw, path);
      }
    std::vector<std::string> types;
    if (s.contains("type")) {
      const ojson& t = s["type"];
      if (t.is_string()) types.push_back(t.get<std::string>());
      else if (t.is_array() && !t.empty())
        for (const ojson& x : t) {
          if (!x.is_string()) fail(path + "/type", "must be a string or an array of strings");
          types.push_back(x.get<std::string>());
        }
      else fail(path + "/type", "must be a string or an array of strings");
    }
    if (s.contains("enum") || s.contains("const")) return literals(s, types, path);
    if (types.empty()) {
      if (s.contains("properties") || s.contains("required") || s.contains("additionalProperties"))
        types.push_back("object");
      else if (s.contains("items") || s.contains("minItems") || s.contains("maxItems"))
        types.push_back("array");
      else if (s.contains("minLength") || s.contains("maxLength"))
        types.push_back("string");
      else
        return any();
    }
    std::vector<uint32_t> branches;
    for (const std::string& t : types) branches.push_back(typed(s, t, path));
    return branches.size() == 1 ? branches[0] : merge(branches, /*exclusive=*/false, path + "/type");
  }

 private:
  uint32_t add(Node n) {
    g_.nodes.push_back(std::move(n));
    return uint32_t(g_.nodes.size() - 1);
  }

  static uint32_t count(const ojson& s, const char* kw, const std::string& path) {
    const ojson& v = s[kw];
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > int64_t(kUnbounded) - 1)
      fail(path, std::string("'") + kw + "' must be a non-negative integer");
    return uint32_t(v.get<int64_t>());
  }

  // Any JSON value: a map of any values, an array of any values, a string, a number, a literal.
  uint32_t any() {
    if (any_ != kNoNode) return any_;
    any_ = add(Node{});  // kAnyOf, branches below
    Node obj, arr, str, num, lit;
    obj.kind = NodeKind::kObject;
    obj.item = any_;
    arr.kind = NodeKind::kArray;
    arr.item = any_;
    str.kind = NodeKind::kString;
    str.max_length = max_string_;
    num.kind = NodeKind::kNumber;
    lit.kind = NodeKind::kLiteral;
    lit.literals = {"false", "null", "true"};
    std::vector<uint32_t> b = {add(std::move(obj)), add(std::move(arr)), add(std::move(str)), add(std::move(num)),
                               add(std::move(lit))};
    g_.nodes[any_].branches = std::move(b);
    return any_;
  }

  uint32_t typed(const ojson& s, const std::string& t, const std::string& path) {
    Node n;
    if (t == "object") {
      n.kind = NodeKind::kObject;
      if (s.contains("properties")) {
        const ojson& props = s["properties"];
        if (!props.is_object()) fail(path + "/properties", "must be an object");
        if (props.size() > 64) fail(path + "/properties", "at most 64 properties per object are supported");
        for (auto it = props.begin(); it != props.end(); ++it) {
          Property p;
          p.key = ojson(it.key()).dump();
          p.value = value(it.value(), path + "/properties/" + it.key());
          n.props.push_back(std::move(p));
        }
      }
      if (s.contains("required")) {
        const ojson& req = s["required"];
        if (!req.is_array()) fail(path + "/required", "must be an array of property names");
        for (const ojson& r : req) {
          const std::string key = r.is_string() ? ojson(r.get<std::string>()).dump() : "";
          auto p = std::find_if(n.props.begin(), n.props.end(), [&](const Property& x) { return x.key == key; });
          if (p == n.props.end()) {
            const std::string name = r.is_string() ? r.get<std::string>() : r.dump();
            fail(path + "/required", std::string("'").append(name).append("' is not one of the object's properties"));
          }
          p->required = true;
        }
      }
      n.next_required.assign(n.props.size() + 1, uint32_t(n.props.size()));
      for (size_t i = n.props.size(); i-- > 0;)
        n.next_required[i] = n.props[i].required ? uint32_t(i) : n.next_required[i + 1];
      // Declared properties: only those are written (valid whatever additionalProperties says).
      // None declared: a map whose values follow additionalProperties (false: only {}).
      const ojson ap = s.contains("additionalProperties") ? s["additionalProperties"] : ojson(true);
      if (!ap.is_boolean() && !ap.is_object()) fail(path + "/additionalProperties", "must be a boolean or a schema");
      if (n.props.empty()) n.item = ap == false ? kNoNode : value(ap, path + "/additionalProperties");
    } else if (t == "array") {
      n.kind = NodeKind::kArray;
      if (s.contains("items") && s["items"].is_array())
        fail(path + "/items", "an array of item schemas is not supported (one schema for every item)");
      n.item = s.contains("items") ? value(s["items"], path + "/items") : any();
      if (s.contains("minItems")) n.min_items = count(s, "minItems", path);
      if (s.contains("maxItems")) n.max_items = count(s, "maxItems", path);
      if (n.min_items > n.max_items) fail(path, "minItems is larger than maxItems");
    } else if (t == "string") {
      n.kind = NodeKind::kString;
      if (s.contains("minLength")) n.min_length = count(s, "minLength", path);
      if (s.contains("maxLength")) n.max_length = count(s, "maxLength", path);
      if (n.min_length > n.max_length) fail(path, "minLength is larger than maxLength");
      if (n.min_length > max_string_)
        fail(path, "minLength is larger than this server's limit of " + std::to_string(max_string_) +
                       " characters per string");
      n.max_length = std::min(n.max_length, max_string_);
    } else if (t == "number" || t == "integer") {
      n.kind = NodeKind::kNumber;
      n.integer = t == "integer";
    } else if (t == "boolean") {
      n.kind = NodeKind::kLiteral;
      n.literals = {"false", "true"};
    } else if (t == "null") {
      n.kind = NodeKind::kLiteral;
      n.literals = {"null"};
    } else {
      fail(path + "/type", "unknown type '" + t + "'");
    }
    return add(std::move(n));
  }

  static bool has_type(const ojson& v, const std::string& t) {
    if (t == "object") return v.is_object();
    if (t == "array") return v.is_array();
    if (t == "string") return v.is_string();
    if (t == "number") return v.is_number();
    if (t == "integer") return v.is_number_integer() || (v.is_number_float() && v.get<double>() == double(int64_t(v.get<double>())));
    if (t == "boolean") return v.is_boolean();
    if (t == "null") return v.is_null();
    return false;
  }

  uint32_t literals(const ojson& s, const std::vector<std::string>& types, const std::string& path) {
    for (auto it = s.begin(); it != s.end(); ++it)
      if (it.key() != "enum" && it.key() != "const" && it.key() != "type" && !kAnnotations.count(it.key()))
        fail(path, "'" + it.key() + "' together with enum or const is not supported");
    std::vector<ojson> values;
    if (s.contains("const")) values.push_back(s["const"]);
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty()) fail(path + "/enum", "must be a non-empty array");
      if (s.contains("const")) fail(path, "enum together with const is not supported");
      for (const ojson& v : s["enum"]) values.push_back(v);
    }
    Node n;
    n.kind = NodeKind::kLiteral;
    for (const ojson& v : values) {
      const bool typed_ok = types.empty() || std::any_of(types.begin(), types.end(), [&](auto& t) { return has_type(v, t); });
      if (typed_ok) n.literals.push_back(v.dump());
    }
    if (n.literals.empty()) fail(path, "no enum or const value has the schema's type");
    std::sort(n.literals.begin(), n.literals.end());
    n.literals.erase(std::unique(n.literals.begin(), n.literals.end()), n.literals.end());
    return add(std::move(n));
  }

  uint32_t any_of(const ojson& list, const std::string& kw, const std::string& path) {
    if (!list.is_array() || list.empty()) fail(path + "/" + kw, "must be a non-empty array of schemas");
    std::vector<uint32_t> branches;
    for (size_t i = 0; i < list.size(); ++i) branches.push_back(value(list[i], path + "/" + kw + "/" + std::to_string(i)));
    return branches.size() == 1 ? branches[0] : merge(branches, kw == "oneOf", path + "/" + kw);
  }

  // Branches as one node: literal sets joined; number and integer (anyOf) the number. Branches
  // that would still start alike are refused after the first sets are known.
  uint32_t merge(const std::vector<uint32_t>& in, bool exclusive, const std::string& path) {
    Node n;
    Node lit;
    lit.kind = NodeKind::kLiteral;
    int number = -1;
    for (uint32_t b : in) {
      const Node& x = g_.nodes[b];
      if (x.kind == NodeKind::kLiteral) {
        for (const std::string& l : x.literals) {
          if (exclusive && std::find(lit.literals.begin(), lit.literals.end(), l) != lit.literals.end())
            fail(path, "the value " + l + " matches several branches");
          lit.literals.push_back(l);
        }
        continue;
      }
      if (x.kind == NodeKind::kNumber) {
        if (number >= 0) {
          if (exclusive) fail(path, "integer and number branches overlap (use anyOf)");
          if (!x.integer) n.branches[size_t(number)] = b;  // number covers integer
          continue;
        }
        number = int(n.branches.size());
      }
      n.branches.push_back(b);
    }
    if (!lit.literals.empty()) {
      std::sort(lit.literals.begin(), lit.literals.end());
      lit.literals.erase(std::unique(lit.literals.begin(), lit.literals.end()), lit.literals.end());
      n.branches.push_back(add(std::move(lit)));
    }
    if (n.branches.size() == 1) return n.branches[0];
    const uint32_t id = add(std::move(n));
    paths_[id] = path;
    return id;
  }

  uint32_t ref(const ojson& r, const std::string& path) {
    if (!r.is_string()) fail(path + "/$ref", "must be a string");
    const std::string target = r.get<std::string>();
    if (auto it = refs_.find(target); it != refs_.end()) return it->second;
    const ojson* s = nullptr;
    if (target == "#") {
      s = &root_;
    } else {
      for (const char* base : {"#/$defs/", "#/definitions/"}) {
        const std::string b = base;
        if (target.rfind(b, 0) != 0) continue;
        const std::string where = b.substr(2, b.size() - 3), name = target.substr(b.size());
        if (root_.is_object() && root_.contains(where) && root_[where].is_object() && root_[where].contains(name))
          s = &root_[where][name];
      }
    }
    if (!s) fail(path + "/$ref", "'" + target + "' is not found (only #, #/$defs/NAME and #/definitions/NAME)");
    // An indirection node first, so a schema may refer to itself.
    const uint32_t id = add(Node{});
    refs_[target] = id;
    const uint32_t body = value(*s, target);
    g_.nodes[id].branches = {body};
    return id;
  }

  void first_sets() {
    for (Node& n : g_.nodes) {
      auto set = [&](uint8_t c) { n.first[c >> 6] |= uint64_t(1) << (c & 63); };
      switch (n.kind) {
        case NodeKind::kObject: set('{'); break;
        case NodeKind::kArray: set('['); break;
        case NodeKind::kString: set('"'); break;
        case NodeKind::kNumber:
          set('-');
          for (char c = '0'; c <= '9'; ++c) set(uint8_t(c));
          break;
        case NodeKind::kLiteral:
          for (const std::string& l : n.literals) set(uint8_t(l[0]));
          break;
        case NodeKind::kAnyOf: break;
      }
    }
    for (bool changed = true; changed;) {
      changed = false;
      for (Node& n : g_.nodes) {
        if (n.kind != NodeKind::kAnyOf) continue;
        for (uint32_t b : n.branches)
          for (int w = 0; w < 4; ++w) {
            const uint64_t f = n.first[w] | g_.nodes[b].first[w];
            changed |= f != n.first[w];
            n.first[w] = f;
          }
      }
    }
    for (uint32_t i = 0; i < g_.nodes.size(); ++i) {
      const Node& n = g_.nodes[i];
      if (n.kind != NodeKind::kAnyOf) continue;
      const std::string where = paths_.count(i) ? paths_[i] : "#";
      if (n.first == std::array<uint64_t, 4>{}) fail(where, "the schema refers only to itself");
      for (size_t a = 0; a < n.branches.size(); ++a)
        for (size_t b = a + 1; b < n.branches.size(); ++b)
          for (int c = 0; c < 256; ++c)
            if (g_.nodes[n.branches[a]].starts_with(uint8_t(c)) && g_.nodes[n.branches[b]].starts_with(uint8_t(c)))
              fail(where, "branches " + std::to_string(a) + " and " + std::to_string(b) +
                              " can both start with '" + std::string(1, char(c)) +
                              "' (the branches of anyOf, oneOf or a type list must be of different types)");
    }
  }

  const ojson& root_;
  const uint32_t max_string_;
  Grammar g_;
  uint32_t any_ = kNoNode;
  std::map<std::string, uint32_t> refs_;
  std::map<uint32_t, std::string> paths_;
};

}  // namespace

std::shared_ptr<const Grammar> json_object_grammar(const CompileOptions& opt) {
  const ojson schema = {{"type", "object"}};
  Compiler c(schema, opt);
  const uint32_t root = c.value(schema, "#");
  return std::make_shared<const Grammar>(c.finish(root));
}

Result<std::shared_ptr<const Grammar>> compile_json_schema(const ojson& schema, const CompileOptions& opt) {
  try {
    Compiler c(schema, opt);
    const uint32_t root = c.value(schema, "#");
    return std::make_shared<const Grammar>(c.finish(root));
  } catch (const CompileError& e) {
    return make_error(e.message);
  } catch (const nlohmann::json::exception& e) {
    return make_error(std::string("malformed schema: ") + e.what());
  }
}

}  // namespace ost::grammar
