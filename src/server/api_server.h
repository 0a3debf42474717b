// The HTTP front of the engine: OpenAI-compatible routes, health, Prometheus metrics and the
// embedded web UI. HTTP threads parse and check a request, hand it to the EngineLoop and
// relay its channel to the client (JSON or SSE); a client that goes away cancels its request.
#pragma once
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine_loop.h"
#include "server/http.h"
#include "server/openai.h"

namespace ost::server {

struct ApiServerOptions {
  std::vector<std::string> api_keys;  // empty: no authentication
  RequestLimits limits;
  bool demo_model = false;            // the built-in model with random weights
  http::ServerOptions http;
};

class ApiServer {
 public:
  explicit ApiServer(ApiServerOptions opt);
  ~ApiServer();
  Status listen(const std::string& host, int port);
  int port() const { return http_.port(); }
  void start();  // serves (GET /health answers 503 until set_engine)
  void stop();
  void set_engine(std::unique_ptr<EngineLoop> engine);
  void set_load_error(const std::string& message);
  std::string metrics_text() const;

 private:
  void handle(const http::Request& req, http::Conn& c);
  void chat(const http::Request& req, http::Conn& c, const std::shared_ptr<EngineLoop>& engine);
  void reply(http::Conn& c, const std::string& route, int status, const std::string& body,
             const std::string& content_type = "application/json");
  void reply_error(http::Conn& c, const std::string& route, const ApiError& e);
  void count(const std::string& route, int status);
  bool authorized(const http::Request& req) const;
  std::shared_ptr<EngineLoop> engine() const;

  ApiServerOptions opt_;
  http::Server http_;
  mutable std::mutex mu_;
  std::shared_ptr<EngineLoop> engine_;
  std::string load_error_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (route, status) -> count
  uint64_t disconnects_ = 0;
};

}  // namespace ost::server
