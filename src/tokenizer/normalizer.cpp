#include "tokenizer/normalizer.h"

#include <cstdlib>
#include <utf8proc.h>

namespace ost::tok {

bool is_nfc_quick(std::string_view text) {
  // Text made only of code points below U+0300 is NFC: that range holds no combining marks
  // and no characters that NFC would change. Such code points are exactly the UTF-8 bytes
  // below 0xCC (ASCII, continuation bytes, and lead bytes 0xC2..0xCB).
  for (unsigned char c : text) {
    if (c >= 0xCC) return false;
  }
  return true;
}

std::string to_nfc(std::string_view text) {
  if (is_nfc_quick(text)) return std::string(text);
  utf8proc_uint8_t* dst = nullptr;
  // An explicit length (no UTF8PROC_NULLTERM) so that U+0000 inside the text is kept.
  const utf8proc_ssize_t len =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), utf8proc_ssize_t(text.size()),
                   &dst, utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (len < 0) {
    // Only reachable for invalid UTF-8, which encode() repairs first; keep the text as is.
    std::free(dst);
    return std::string(text);
  }
  std::string out(reinterpret_cast<const char*>(dst), size_t(len));
  std::free(dst);
  return out;
}

}  // namespace ost::tok
