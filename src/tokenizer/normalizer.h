// Unicode NFC, the normalizer of the Qwen tokenizers.
#pragma once
#include <string>
#include <string_view>

namespace ost::tok {

// True when `text` (valid UTF-8) is certainly NFC already, decided by a cheap byte scan.
bool is_nfc_quick(std::string_view text);

// The NFC form of `text` (valid UTF-8).
std::string to_nfc(std::string_view text);

}  // namespace ost::tok
