// tokenizer.json -> TokenizerImpl. Only the configuration used by the Qwen2/Qwen3 family is
// accepted; anything else is refused with a message rather than tokenized differently from HF.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "tokenizer/byte_level.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/tokenizer_impl.h"

namespace ost::tok {

using nlohmann::json;

namespace {

std::string type_of(const json& j) {
  auto it = j.find("type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool flag(const json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? dflt : it->get<bool>();
}

bool is_null_or_empty_string(const json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty());
}

Result<bool> parse_normalizer(const json& root) {
  auto it = root.find("normalizer");
  if (it == root.end() || it->is_null()) return false;
  const std::string type = type_of(*it);
  if (type == "NFC") return true;
  if (type == "Sequence" && it->contains("normalizers") && (*it)["normalizers"].size() == 1 &&
      type_of((*it)["normalizers"][0]) == "NFC") {
    return true;
  }
  return make_error("unsupported normalizer \"%s\" (only NFC)", type.c_str());
}

// Expects Sequence[Split(Regex, Isolated), ByteLevel(add_prefix_space=false, use_regex=false)]
// and returns the regex.
Result<std::string> parse_pre_tokenizer(const json& root) {
  auto it = root.find("pre_tokenizer");
  if (it == root.end() || it->is_null() || type_of(*it) != "Sequence" || !it->contains("pretokenizers")) {
    return make_error("unsupported pre_tokenizer (expected a Sequence of Split and ByteLevel)");
  }
  const json& seq = (*it)["pretokenizers"];
  if (!seq.is_array() || seq.size() != 2 || type_of(seq[0]) != "Split" || type_of(seq[1]) != "ByteLevel") {
    return make_error("unsupported pre_tokenizer (expected a Sequence of Split and ByteLevel)");
  }
  const json& split = seq[0];
  const json& byte_level = seq[1];
  if (!split.contains("pattern") || !split["pattern"].contains("Regex") ||
      !split["pattern"]["Regex"].is_string()) {
    return make_error("unsupported pre_tokenizer: Split needs a Regex pattern");
  }
  if (split.value("behavior", std::string()) != "Isolated" || flag(split, "invert", false)) {
    return make_error("unsupported pre_tokenizer: Split must be behavior Isolated, not inverted");
  }
  if (flag(byte_level, "add_prefix_space", true) || flag(byte_level, "use_regex", true)) {
    return make_error("unsupported pre_tokenizer: ByteLevel must have add_prefix_space and use_regex false");
  }
  return split["pattern"]["Regex"].get<std::string>();
}

Status check_decoder_and_post_processor(const json& root) {
  auto d = root.find("decoder");
  if (d == root.end() || d->is_null() || type_of(*d) != "ByteLevel") {
    return make_error("unsupported decoder (only ByteLevel)");
  }
  // A ByteLevel post-processor only adjusts offsets; anything else could add BOS/EOS ids.
  auto p = root.find("post_processor");
  if (p != root.end() && !p->is_null() && type_of(*p) != "ByteLevel") {
    return make_error("unsupported post_processor \"%s\" (only ByteLevel or none)", type_of(*p).c_str());
  }
  return Status::ok();
}

Status check_model_options(const json& model) {
  const std::string type = type_of(model);
  if (!type.empty() && type != "BPE") return make_error("unsupported model type \"%s\" (only BPE)", type.c_str());
  if (!model.contains("vocab") || !model["vocab"].is_object()) return make_error("model has no vocab object");
  if (!model.contains("merges") || !model["merges"].is_array()) return make_error("model has no merges array");
  if (flag(model, "byte_fallback", false)) return make_error("unsupported BPE option byte_fallback");
  auto dropout = model.find("dropout");
  if (dropout != model.end() && !dropout->is_null() && dropout->get<double>() != 0.0) {
    return make_error("unsupported BPE option dropout");
  }
  if (!is_null_or_empty_string(model, "continuing_subword_prefix") ||
      !is_null_or_empty_string(model, "end_of_word_suffix")) {
    return make_error("unsupported BPE option continuing_subword_prefix/end_of_word_suffix");
  }
  return Status::ok();
}

Status parse_merges(const json& merges, std::vector<std::pair<std::string, std::string>>& out) {
  out.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    std::string a, b;
    if (m.is_string()) {  // older files: "a b"
      const std::string& s = m.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos) return make_error("merge #%zu is not \"left right\"", i);
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return make_error("merge #%zu has an unknown form", i);
    }
    auto ra = token_text_to_bytes(a), rb = token_text_to_bytes(b);
    if (!ra || !rb) return make_error("merge #%zu uses characters outside the byte-level alphabet", i);
    out.emplace_back(std::move(*ra), std::move(*rb));
  }
  return Status::ok();
}

struct AddedToken {
  std::string content;
  int32_t id;
  bool special;
  bool normalized;
};

Result<std::vector<AddedToken>> parse_added_tokens(const json& root) {
  std::vector<AddedToken> out;
  auto it = root.find("added_tokens");
  if (it == root.end() || it->is_null()) return out;
  if (!it->is_array()) return make_error("added_tokens is not an array");
  for (const json& t : *it) {
    if (!t.contains("id") || !t.contains("content")) return make_error("an added token lacks id or content");
    AddedToken a{t["content"].get<std::string>(), t["id"].get<int32_t>(), flag(t, "special", false),
                 flag(t, "normalized", true)};
    if (a.id < 0) return make_error("added token \"%s\" has a negative id", a.content.c_str());
    if (flag(t, "lstrip", false) || flag(t, "rstrip", false) || flag(t, "single_word", false)) {
      return make_error("unsupported added token option (lstrip/rstrip/single_word) on \"%s\"",
                        a.content.c_str());
    }
    out.push_back(std::move(a));
  }
  return out;
}

Result<TokenizerImpl> build(const json& root) {
  if (!root.is_object()) return make_error("top level is not a JSON object");
  TokenizerImpl impl;
  auto nfc = parse_normalizer(root);
  if (!nfc) return nfc.status();
  impl.nfc = *nfc;
  auto pattern = parse_pre_tokenizer(root);
  if (!pattern) return pattern.status();
  auto pre = PreTokenizer::create(*pattern);
  if (!pre) return pre.status();
  impl.pretokenizer = std::move(*pre);
  OST_TRY(check_decoder_and_post_processor(root));
  if (!root.contains("model") || !root["model"].is_object()) return make_error("no model object");
  const json& model = root["model"];
  OST_TRY(check_model_options(model));
  auto added = parse_added_tokens(root);
  if (!added) return added.status();

  // Vocab: text in the byte-level alphabet. Entries outside the alphabet cannot come out of
  // BPE over bytes; they still decode, to their own UTF-8 (HF's ByteLevel decoder fallback).
  const json& vocab = model["vocab"];
  std::unordered_map<std::string, int32_t> by_bytes;
  by_bytes.reserve(vocab.size());
  impl.token_ids.reserve(vocab.size() + added->size());
  std::vector<std::pair<int32_t, std::string>> id_bytes;
  id_bytes.reserve(vocab.size() + added->size());
  int32_t max_id = -1;
  for (auto kv = vocab.begin(); kv != vocab.end(); ++kv) {
    if (!kv.value().is_number_integer()) return make_error("vocab entry has a non-integer id");
    const int32_t id = kv.value().get<int32_t>();
    if (id < 0) return make_error("vocab entry has a negative id");
    max_id = std::max(max_id, id);
    auto raw = token_text_to_bytes(kv.key());
    if (raw) by_bytes.emplace(*raw, id);
    id_bytes.emplace_back(id, raw ? *raw : kv.key());
    impl.token_ids[kv.key()] = id;
  }
  std::vector<std::pair<std::string, std::string>> merges;
  OST_TRY(parse_merges(model["merges"], merges));
  auto bpe = BpeModel::create(by_bytes, merges, flag(model, "ignore_merges", false));
  if (!bpe) return bpe.status();
  impl.bpe = std::move(*bpe);

  // HF ignores the ids written for added tokens: a token already in the vocab keeps its vocab
  // id, the others are numbered on from the vocab size in file order (AddedVocabulary::
  // add_tokens). Refuse files where that differs from the written id, since the model was
  // trained with one of the two only.
  {
    const int32_t model_size = int32_t(impl.token_ids.size());
    int32_t max_added = -1;
    std::unordered_map<std::string, int32_t> seen;
    for (const AddedToken& a : *added) {
      if (a.content.empty() || seen.count(a.content)) continue;
      auto in_vocab = impl.token_ids.find(a.content);
      int32_t hf_id;
      if (in_vocab != impl.token_ids.end()) {
        hf_id = in_vocab->second;
      } else if (max_added >= 0 && (max_added >= model_size || model_size == 0)) {
        hf_id = max_added + 1;
      } else {
        hf_id = model_size;
      }
      max_added = std::max(max_added, hf_id);
      seen.emplace(a.content, hf_id);
      if (hf_id != a.id) {
        return make_error("added token \"%s\" has id %d, but Hugging Face would number it %d",
                          a.content.c_str(), a.id, hf_id);
      }
    }
  }
  // Added tokens come after the vocab so that they win for decode and token_id, as in HF.
  for (const AddedToken& a : *added) {
    max_id = std::max(max_id, a.id);
    auto raw = token_text_to_bytes(a.content);
    id_bytes.emplace_back(a.id, raw ? *raw : a.content);
    impl.token_ids[a.content] = a.id;
    if (a.normalized && impl.nfc) {
      impl.normalized_added.add(to_nfc(a.content), a.id);
    } else {
      impl.raw_added.add(a.content, a.id);
    }
  }

  // Ids index dense tables; a huge id is a broken file, not a real vocabulary.
  if (max_id >= (1 << 24)) return make_error("token id %d is implausibly large", max_id);
  impl.vocab_size = max_id + 1;
  const size_t n = size_t(impl.vocab_size);
  std::vector<const std::string*> chosen(n, nullptr);
  for (const auto& [id, bytes] : id_bytes) chosen[size_t(id)] = &bytes;  // later entries win
  impl.present.assign(n, 0);
  impl.special.assign(n, 0);
  impl.added.assign(n, 0);
  impl.bytes_offset.assign(n + 1, 0);
  for (size_t id = 0; id < n; ++id) {
    impl.bytes_offset[id] = uint32_t(impl.all_bytes.size());
    if (chosen[id]) {
      impl.present[id] = 1;
      impl.all_bytes.append(*chosen[id]);
    }
  }
  impl.bytes_offset[n] = uint32_t(impl.all_bytes.size());
  for (const AddedToken& a : *added) {
    impl.special[size_t(a.id)] = a.special ? 1 : 0;
    impl.added[size_t(a.id)] = 1;
  }
  return impl;
}

}  // namespace

Result<TokenizerImpl> parse_tokenizer_json(std::string_view json_text) {
  try {
    const json root = json::parse(json_text.begin(), json_text.end());
    return build(root);
  } catch (const json::parse_error& e) {
    return make_error(std::string("not valid JSON: ") + e.what());
  } catch (const json::exception& e) {
    // A field of the wrong type (e.g. a string where an id should be).
    return make_error(std::string("malformed tokenizer.json: ") + e.what());
  }
}

}  // namespace ost::tok
