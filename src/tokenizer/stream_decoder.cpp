#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace ost {

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(tok), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  const tok::TokenizerImpl* t = tok_.impl_.get();
  // Dropped ids add no bytes, exactly as in Tokenizer::decode, so both stay in step.
  if (!t || !t->decodable(id, skip_special_)) return {};
  pending_.append(t->bytes_of(id));
  // The lossy decoder stops before an unfinished but so far valid character; everything
  // before it is final. An invalid byte can never become valid later, so it is replaced now,
  // as the whole-sequence decode would.
  std::string out;
  const size_t used = tok::append_utf8_lossy(pending_, out, /*final=*/false);
  pending_.erase(0, used);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = tok::utf8_lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace ost
