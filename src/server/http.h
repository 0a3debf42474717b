// A small HTTP/1.1 server: a thread per connection (bounded), keep-alive, Content-Length and
// chunked request bodies, fixed-length and chunked responses (SSE), a body size limit (413),
// header and idle timeouts, and a way for a handler to notice that its client went away.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "core/status.h"

namespace ost::http {

struct Request {
  std::string method, target, path, query;
  int version_minor = 1;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string header(std::string_view name) const;  // "" when absent (name lower-case)
  bool keep_alive() const;
};

struct ParseLimits {
  size_t max_header_bytes = 32 << 10;
  size_t max_body_bytes = 64 << 20;
};

// Parsing is split from the socket so it can be tested on byte strings.
enum class ParseState { kNeedMore, kDone, kError };
struct HeadResult {
  ParseState state = ParseState::kNeedMore;
  size_t consumed = 0;       // bytes of the head (through the blank line)
  int status = 400;          // on error: 400, 413, 414, 431, 501, 505
  std::string error;
  int64_t content_length = 0;
  bool chunked = false;
};
HeadResult parse_head(std::string_view buf, Request& req, const ParseLimits& lim);

struct ChunkedResult {
  ParseState state = ParseState::kNeedMore;
  size_t consumed = 0;
  int status = 400;
  std::string error;
};
// Decodes a whole chunked body (with trailers) from the start of `buf` into `out`.
ChunkedResult decode_chunked(std::string_view buf, std::string& out, size_t max_body);

const char* reason_phrase(int status);

// One connection, as seen by a handler.
class Conn {
 public:
  explicit Conn(int fd) : fd_(fd) {}
  bool send_all(std::string_view data);
  bool respond(int status, std::string_view content_type, std::string_view body,
               const std::vector<std::pair<std::string, std::string>>& headers = {});
  bool begin_chunked(int status, std::string_view content_type,
                     const std::vector<std::pair<std::string, std::string>>& headers = {});
  bool send_chunk(std::string_view data);
  bool end_chunked();
  // True when the peer closed its side or the socket failed (checked without blocking).
  bool peer_gone();
  bool keep_alive = true;  // the handler may clear it
  bool failed = false;     // a send failed: the connection is closed after the handler

 private:
  int fd_;
};

using Handler = std::function<void(const Request&, Conn&)>;

struct ServerOptions {
  ParseLimits limits;
  int max_connections = 256;
  int header_timeout_ms = 30000;  // to receive a whole request head/body
  int idle_timeout_ms = 60000;    // between requests on a kept-alive connection
};

class Server {
 public:
  explicit Server(ServerOptions opt = {}) : opt_(opt) {}
  ~Server();
  // Binds and listens (port 0: an ephemeral port, see port()).
  Status listen(const std::string& host, int port);
  int port() const { return port_; }
  void start(Handler h);  // accepts on a background thread
  void stop();            // closes the listener and every connection, waits for their threads

 private:
  void accept_loop();
  void serve_conn(int fd);

  ServerOptions opt_;
  Handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> conns_;  // open connection fds
  int active_ = 0;
};

}  // namespace ost::http
