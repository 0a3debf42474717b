// The web UI (web/*), embedded into the binary by scripts/embed_web.py -> web_assets_data.cpp.
#pragma once
#include <cstddef>
#include <string_view>

namespace ost::server {

struct WebAsset {
  const char* path;          // URL path, e.g. "/app.js"
  const char* content_type;
  const unsigned char* data;
  size_t size;
};

const WebAsset* find_web_asset(std::string_view path);  // nullptr when absent
const WebAsset* web_assets(size_t* count);

}  // namespace ost::server
