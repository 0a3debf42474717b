#include "tokenizer/tokenizer.h"

#include "core/file_util.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace ost {

using tok::TokenizerImpl;

Result<Tokenizer> Tokenizer::load(const std::string& tokenizer_json_path) {
  if (is_directory(tokenizer_json_path)) {
    return make_error("tokenizer: %s is a directory, not a tokenizer.json file", tokenizer_json_path.c_str());
  }
  if (!file_exists(tokenizer_json_path)) {
    return make_error("tokenizer: %s does not exist (scripts/setup.sh fetches the Qwen3 one)",
                      tokenizer_json_path.c_str());
  }
  auto text = read_file(tokenizer_json_path);
  if (!text) return make_error("tokenizer: " + text.message());
  auto impl = tok::parse_tokenizer_json(*text);
  if (!impl) return make_error("tokenizer: " + tokenizer_json_path + ": " + impl.message());
  return Tokenizer(std::make_shared<const TokenizerImpl>(std::move(*impl)));
}

namespace {

// Normalizes one stretch of text that holds no raw added token, then BPE-encodes each
// pre-tokenized piece.
void encode_plain(const TokenizerImpl& t, std::string_view text, std::vector<int32_t>& out) {
  std::string normalized;
  if (t.nfc && !tok::is_nfc_quick(text)) {
    normalized = tok::to_nfc(text);
    text = normalized;
  }
  std::vector<tok::AddedMatch> matches;
  t.normalized_added.find_all(text, matches);
  std::vector<std::string_view> pieces;
  size_t pos = 0;
  auto encode_stretch = [&](std::string_view stretch) {
    pieces.clear();
    t.pretokenizer.split(stretch, pieces);
    for (std::string_view p : pieces) t.bpe.encode_word(p, out);
  };
  for (const tok::AddedMatch& m : matches) {
    encode_stretch(text.substr(pos, m.pos - pos));
    out.push_back(m.id);
    pos = m.pos + m.len;
  }
  encode_stretch(text.substr(pos));
}

}  // namespace

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  if (!impl_ || text.empty()) return out;
  std::string repaired;
  if (!tok::is_valid_utf8(text)) {
    repaired = tok::utf8_lossy(text);
    text = repaired;
  }
  out.reserve(text.size() / 3 + 8);
  std::vector<tok::AddedMatch> matches;
  impl_->raw_added.find_all(text, matches);
  size_t pos = 0;
  for (const tok::AddedMatch& m : matches) {
    if (m.pos > pos) encode_plain(*impl_, text.substr(pos, m.pos - pos), out);
    out.push_back(m.id);
    pos = m.pos + m.len;
  }
  if (pos < text.size()) encode_plain(*impl_, text.substr(pos), out);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  if (!impl_) return {};
  // HF joins the bytes of all tokens first and repairs UTF-8 once, so a character split
  // across tokens survives.
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (int32_t id : ids) {
    if (impl_->decodable(id, skip_special)) bytes.append(impl_->bytes_of(id));
  }
  if (tok::is_valid_utf8(bytes)) return bytes;
  return tok::utf8_lossy(bytes);
}

std::string Tokenizer::token_bytes(int32_t id) const {
  if (!impl_ || !impl_->decodable(id, false)) return {};
  return std::string(impl_->bytes_of(id));
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  if (!impl_) return std::nullopt;
  auto it = impl_->token_ids.find(std::string(token));
  if (it == impl_->token_ids.end()) return std::nullopt;
  return it->second;
}

int32_t Tokenizer::vocab_size() const { return impl_ ? impl_->vocab_size : 0; }

bool Tokenizer::is_special(int32_t id) const {
  return impl_ && id >= 0 && id < impl_->vocab_size && impl_->special[size_t(id)];
}

bool Tokenizer::is_added(int32_t id) const {
  return impl_ && id >= 0 && id < impl_->vocab_size && impl_->added[size_t(id)];
}

}  // namespace ost
