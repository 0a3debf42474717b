// UTF-8 helpers shared by encode (input repair) and decode (lossy output).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ost::tok {

bool is_valid_utf8(std::string_view s);

// Appends `in` to `out` as valid UTF-8. Each maximal invalid subpart becomes one U+FFFD, the
// policy of Python's errors="replace", Rust's from_utf8_lossy and WHATWG, so results match HF.
// With final == false a valid but unfinished sequence at the end is left unconsumed (the
// streaming decoder waits for its remaining bytes). Returns the number of bytes consumed.
size_t append_utf8_lossy(std::string_view in, std::string& out, bool final);

std::string utf8_lossy(std::string_view in);

// Appends the UTF-8 encoding of `cp` (assumed to be a valid scalar value).
void append_utf8(uint32_t cp, std::string& out);

}  // namespace ost::tok
