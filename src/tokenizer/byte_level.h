// GPT-2 byte-level alphabet: every byte maps to one printable code point so that BPE vocab
// entries are readable strings (space -> U+0120 'Ġ', newline -> U+010A 'Ċ').
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ost::tok {

uint32_t byte_to_codepoint(uint8_t b);
int codepoint_to_byte(uint32_t cp);  // -1 for code points outside the alphabet

// Raw bytes -> vocab text (UTF-8 of the mapped code points).
std::string bytes_to_token_text(std::string_view bytes);

// Vocab text -> raw bytes; nullopt when a character is outside the alphabet (or the text is
// not valid UTF-8).
std::optional<std::string> token_text_to_bytes(std::string_view text);

}  // namespace ost::tok
