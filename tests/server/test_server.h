// A real ApiServer on an ephemeral loopback port serving the built-in demo model, and the
// request helpers the server tests share. No timing assertions: waits poll with a deadline.
#pragma once
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "common/temp_dir.h"
#include "core/file_util.h"
#include "server/api_server.h"
#include "server/model_setup.h"
#include "test_client.h"

namespace ost::testing {

inline const std::string kImages = std::string(OST_TEST_DATA) + "/qwen3vl-tiny/images";

// The demo model, written once per test binary.
inline std::string demo_dir() {
  static TempDir dir;
  static std::string path = [] {
    auto d = server::ensure_demo_model(dir / "demo", std::string(OST_ASSETS) + "/qwen3/tokenizer.json");
    EXPECT_TRUE(d.is_ok()) << d.message();
    return d ? *d : std::string();
  }();
  return path;
}

inline std::string base64(const std::string& in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string o;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    o += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], t[v & 63]};
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    o += {t[v >> 18], t[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    o += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
  }
  return o;
}

inline std::string png_data_url(const std::string& name) {
  auto bytes = read_file(kImages + "/" + name);
  EXPECT_TRUE(bytes.is_ok());
  return "data:image/png;base64," + base64(bytes ? *bytes : "");
}

inline nlohmann::json image_message(const std::string& url, const std::string& text) {
  using nlohmann::json;
  return {{"role", "user"},
          {"content", json::array({{{"type", "image_url"}, {"image_url", {{"url", url}}}},
                                   {{"type", "text"}, {"text", text}}})}};
}

inline nlohmann::json user_text(const std::string& t) {
  return nlohmann::json::array({{{"role", "user"}, {"content", t}}});
}

struct TestServer {
  std::unique_ptr<server::ApiServer> srv;
  int port = 0;
  explicit TestServer(server::ApiServerOptions so = {}, EngineLoopOptions eo = {}) {
    so.http.header_timeout_ms = 5000;
    srv = std::make_unique<server::ApiServer>(so);
    EXPECT_TRUE(srv->listen("127.0.0.1", 0).is_ok());
    port = srv->port();
    srv->start();
    auto e = server::load_engine_loop(demo_dir(), "cpu", server::kDemoModelName, eo);
    EXPECT_TRUE(e.is_ok()) << e.message();
    if (e) srv->set_engine(std::move(*e));
  }
  HttpResponse post(const nlohmann::json& body, const std::string& headers = "") {
    return http_request(port, "POST", "/v1/chat/completions", body.dump(), headers);
  }
  HttpResponse post_raw(const std::string& body) {
    return http_request(port, "POST", "/v1/chat/completions", body);
  }
  // The value of an unlabelled metric (or one with the exact label text); -1 when absent.
  double metric(const std::string& name) {
    auto r = http_request(port, "GET", "/metrics");
    size_t p = r.body.find("\n" + name + " ");
    if (p == std::string::npos) return -1;
    return std::stod(r.body.substr(p + name.size() + 2));
  }
  // Polls until pred() holds (false after a generous deadline; no timing is asserted).
  template <class F>
  bool wait_for(F pred) {
    for (int i = 0; i < 1200; ++i) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
};

}  // namespace ost::testing
