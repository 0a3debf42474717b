#include "server/http.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace ost::http {

namespace {

std::string lower(std::string_view s) {
  std::string o(s);
  for (char& c : o) c = char(std::tolower(static_cast<unsigned char>(c)));
  return o;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool is_token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c);
}

std::string error_json(const std::string& msg) {
  std::string esc;
  for (char c : msg) {
    if (c == '"' || c == '\\') esc += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    esc += c;
  }
  return "{\"error\":{\"message\":\"" + esc + "\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}";
}

HeadResult head_error(int status, std::string msg) {
  HeadResult r;
  r.state = ParseState::kError;
  r.status = status;
  r.error = std::move(msg);
  return r;
}

}  // namespace

std::string Request::header(std::string_view name) const {
  for (auto& [k, v] : headers)
    if (k == name) return v;
  return "";
}

bool Request::keep_alive() const {
  const std::string c = lower(header("connection"));
  if (version_minor == 0) return c.find("keep-alive") != std::string::npos;
  return c.find("close") == std::string::npos;
}

HeadResult parse_head(std::string_view buf, Request& req, const ParseLimits& lim) {
  // Tolerate empty lines before the request line (RFC 9112 2.2).
  size_t start = 0;
  while (start + 1 < buf.size() && buf[start] == '\r' && buf[start + 1] == '\n') start += 2;
  const size_t end = buf.find("\r\n\r\n", start);
  if (end == std::string_view::npos) {
    if (buf.size() - start > lim.max_header_bytes) return head_error(431, "request header too large");
    return {};
  }
  if (end - start > lim.max_header_bytes) return head_error(431, "request header too large");
  std::string_view head = buf.substr(start, end - start);
  HeadResult r;
  r.consumed = end + 4;

  // Request line: METHOD SP target SP HTTP/1.x
  const size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == std::string_view::npos || sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return head_error(400, "malformed request line");
  std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                   version = line.substr(sp2 + 1);
  if (method.empty() || !std::all_of(method.begin(), method.end(), is_token_char))
    return head_error(400, "malformed method");
  if (target.empty() || (target[0] != '/' && target != "*")) return head_error(400, "malformed request target");
  if (target.size() > 8192) return head_error(414, "request target too long");
  for (char c : target)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return head_error(400, "malformed request target");
  if (version.size() != 8 || version.substr(0, 7) != "HTTP/1." || (version[7] != '0' && version[7] != '1')) {
    if (version.substr(0, 5) == "HTTP/") return head_error(505, "HTTP version not supported");
    return head_error(400, "malformed HTTP version");
  }
  req.method = std::string(method);
  req.target = std::string(target);
  req.version_minor = version[7] - '0';
  const size_t q = target.find('?');
  req.path = std::string(target.substr(0, q));
  req.query = q == std::string_view::npos ? "" : std::string(target.substr(q + 1));

  // Header fields.
  req.headers.clear();
  bool have_cl = false;
  std::string te;
  size_t pos = eol == std::string_view::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    size_t e = head.find("\r\n", pos);
    if (e == std::string_view::npos) e = head.size();
    std::string_view f = head.substr(pos, e - pos);
    pos = e + 2;
    if (f.empty()) continue;
    if (f[0] == ' ' || f[0] == '\t') return head_error(400, "obsolete header line folding");
    const size_t colon = f.find(':');
    if (colon == std::string_view::npos || colon == 0) return head_error(400, "malformed header field");
    std::string_view name = f.substr(0, colon);
    if (!std::all_of(name.begin(), name.end(), is_token_char)) return head_error(400, "malformed header name");
    std::string_view value = trim(f.substr(colon + 1));
    for (char c : value)
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f)
        return head_error(400, "control character in a header value");
    std::string key = lower(name);
    if (key == "content-length") {
      if (value.empty() || value.size() > 18 || !std::all_of(value.begin(), value.end(), ::isdigit))
        return head_error(400, "malformed Content-Length");
      const int64_t n = std::stoll(std::string(value));
      if (have_cl && n != r.content_length) return head_error(400, "conflicting Content-Length headers");
      have_cl = true;
      r.content_length = n;
    } else if (key == "transfer-encoding") {
      te += (te.empty() ? "" : ",") + lower(value);
    }
    req.headers.emplace_back(std::move(key), std::string(value));
  }
  if (!te.empty()) {
    if (have_cl) return head_error(400, "both Content-Length and Transfer-Encoding");
    if (std::string(trim(te)) != "chunked") return head_error(501, "unsupported Transfer-Encoding: " + te);
    r.chunked = true;
  }
  if (req.version_minor == 1 && req.header("host").empty()) return head_error(400, "missing Host header");
  if (size_t(r.content_length) > lim.max_body_bytes)
    return head_error(413, "request body too large (limit " + std::to_string(lim.max_body_bytes) + " bytes)");
  r.state = ParseState::kDone;
  return r;
}

ChunkedResult decode_chunked(std::string_view buf, std::string& out, size_t max_body) {
  ChunkedResult r;
  out.clear();
  size_t pos = 0;
  auto err = [&](int status, std::string m) {
    r.state = ParseState::kError;
    r.status = status;
    r.error = std::move(m);
    return r;
  };
  for (;;) {
    const size_t eol = buf.find("\r\n", pos);
    if (eol == std::string_view::npos) {
      if (buf.size() - pos > 1024) return err(400, "malformed chunk size line");
      return r;
    }
    std::string_view line = buf.substr(pos, eol - pos);
    const size_t semi = line.find(';');  // chunk extensions are ignored
    std::string_view hex = trim(line.substr(0, semi));
    if (hex.empty() || hex.size() > 15 || !std::all_of(hex.begin(), hex.end(), ::isxdigit))
      return err(400, "malformed chunk size");
    const size_t n = std::stoull(std::string(hex), nullptr, 16);
    if (out.size() + n > max_body)
      return err(413, "request body too large (limit " + std::to_string(max_body) + " bytes)");
    pos = eol + 2;
    if (n == 0) {
      // Trailer fields, then an empty line.
      for (;;) {
        const size_t e = buf.find("\r\n", pos);
        if (e == std::string_view::npos) {
          if (buf.size() - pos > 8192) return err(400, "malformed chunked trailer");
          return r;
        }
        const bool empty = e == pos;
        pos = e + 2;
        if (empty) {
          r.state = ParseState::kDone;
          r.consumed = pos;
          return r;
        }
      }
    }
    if (buf.size() < pos + n + 2) return r;
    out.append(buf.substr(pos, n));
    if (buf.substr(pos + n, 2) != "\r\n") return err(400, "chunk data not followed by CRLF");
    pos += n + 2;
  }
}

const char* reason_phrase(int s) {
  switch (s) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

// ---- Conn ----

bool Conn::send_all(std::string_view data) {
  if (failed) return false;
  while (!data.empty()) {
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      failed = true;
      return false;
    }
    data.remove_prefix(size_t(n));
  }
  return true;
}

static std::string status_line_and_headers(int status, std::string_view ct,
                                           const std::vector<std::pair<std::string, std::string>>& headers,
                                           bool keep_alive) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
  if (!ct.empty()) h += "Content-Type: " + std::string(ct) + "\r\n";
  for (auto& [k, v] : headers) h += k + ": " + v + "\r\n";
  if (!keep_alive) h += "Connection: close\r\n";
  return h;
}

bool Conn::respond(int status, std::string_view ct, std::string_view body,
                   const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string h = status_line_and_headers(status, ct, headers, keep_alive);
  h += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  if (body.size() < 64 << 10) return send_all(h + std::string(body));
  return send_all(h) && send_all(body);
}

bool Conn::begin_chunked(int status, std::string_view ct, const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string h = status_line_and_headers(status, ct, headers, keep_alive);
  h += "Transfer-Encoding: chunked\r\n\r\n";
  return send_all(h);
}

bool Conn::send_chunk(std::string_view data) {
  if (data.empty()) return !failed;
  char len[32];
  std::snprintf(len, sizeof len, "%zx\r\n", data.size());
  return send_all(std::string(len) + std::string(data) + "\r\n");
}

bool Conn::end_chunked() { return send_all("0\r\n\r\n"); }

bool Conn::peer_gone() {
  if (failed) return true;
  pollfd p{fd_, short(POLLIN | POLLRDHUP), 0};
  const int n = ::poll(&p, 1, 0);
  if (n <= 0) return false;
  if (p.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)) return true;
  if (p.revents & POLLIN) {
    char c;
    const ssize_t k = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }
  return false;
}

// ---- Server ----

Server::~Server() { stop(); }

Status Server::listen(const std::string& host, int port) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  const std::string port_s = std::to_string(port);
  if (int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port_s.c_str(), &hints, &res); rc != 0)
    return make_error("cannot resolve %s: %s", host.c_str(), gai_strerror(rc));
  std::string last_err = "no address";
  for (addrinfo* a = res; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
      port_ = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                       : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
      listen_fd_ = fd;
      break;
    }
    last_err = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (listen_fd_ < 0) return make_error("cannot listen on %s:%d: %s", host.c_str(), port, last_err.c_str());
  return Status::ok();
}

void Server::start(Handler h) {
  handler_ = std::move(h);
  accept_thread_ = std::thread([this] { accept_loop(); });
}

void Server::stop() {
  if (stopping_.exchange(true)) return;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (accept_thread_.joinable()) accept_thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  std::unique_lock<std::mutex> l(mu_);
  for (int fd : conns_) ::shutdown(fd, SHUT_RDWR);
  cv_.wait(l, [&] { return active_ == 0; });
}

void Server::accept_loop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::unique_lock<std::mutex> l(mu_);
    if (stopping_ || active_ >= opt_.max_connections) {
      l.unlock();
      Conn c(fd);
      c.keep_alive = false;
      c.respond(503, "application/json", error_json("too many connections"));
      ::close(fd);
      continue;
    }
    active_++;
    conns_.push_back(fd);
    std::thread([this, fd] {
      serve_conn(fd);
      std::lock_guard<std::mutex> g(mu_);
      conns_.erase(std::find(conns_.begin(), conns_.end(), fd));
      ::close(fd);
      active_--;
      cv_.notify_all();
    }).detach();
  }
}

void Server::serve_conn(int fd) {
  using Clock = std::chrono::steady_clock;
  std::string buf;
  char tmp[16384];
  // Reads more bytes before `deadline`; false on timeout, EOF or error.
  auto read_more = [&](Clock::time_point deadline, bool* timed_out) {
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        *timed_out = true;
        return false;
      }
      pollfd p{fd, POLLIN, 0};
      const int n = ::poll(&p, 1, int(std::min<int64_t>(left, 500)));
      if (stopping_) return false;
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return false;
      if (n == 0) continue;
      const ssize_t k = ::recv(fd, tmp, sizeof tmp, 0);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) return false;
      buf.append(tmp, size_t(k));
      return true;
    }
  };
  auto reject = [&](int status, const std::string& msg) {
    Conn c(fd);
    c.keep_alive = false;
    c.respond(status, "application/json", error_json(msg));
  };

  while (!stopping_) {
    Request req;
    HeadResult head;
    bool timed_out = false;
    Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(
                                                    buf.empty() ? opt_.idle_timeout_ms : opt_.header_timeout_ms);
    for (;;) {
      head = parse_head(buf, req, opt_.limits);
      if (head.state != ParseState::kNeedMore) break;
      const bool had_data = !buf.empty();
      if (!read_more(deadline, &timed_out)) {
        if (timed_out && had_data) reject(408, "timed out reading the request");
        return;
      }
      if (!had_data) deadline = Clock::now() + std::chrono::milliseconds(opt_.header_timeout_ms);
    }
    if (head.state == ParseState::kError) {
      reject(head.status, head.error);
      return;
    }
    deadline = Clock::now() + std::chrono::milliseconds(opt_.header_timeout_ms);
    if (lower(req.header("expect")) == "100-continue" && (head.chunked || head.content_length > 0)) {
      Conn c(fd);
      if (!c.send_all("HTTP/1.1 100 Continue\r\n\r\n")) return;
    }
    size_t body_end = head.consumed;
    if (head.chunked) {
      for (;;) {
        auto cr = decode_chunked(std::string_view(buf).substr(head.consumed), req.body, opt_.limits.max_body_bytes);
        if (cr.state == ParseState::kError) {
          reject(cr.status, cr.error);
          return;
        }
        if (cr.state == ParseState::kDone) {
          body_end = head.consumed + cr.consumed;
          break;
        }
        if (!read_more(deadline, &timed_out)) {
          if (timed_out) reject(408, "timed out reading the request body");
          return;
        }
      }
    } else {
      const size_t need = head.consumed + size_t(head.content_length);
      while (buf.size() < need)
        if (!read_more(deadline, &timed_out)) {
          if (timed_out) reject(408, "timed out reading the request body");
          return;
        }
      req.body = buf.substr(head.consumed, size_t(head.content_length));
      body_end = need;
    }
    buf.erase(0, body_end);

    Conn c(fd);
    c.keep_alive = req.keep_alive();
    try {
      handler_(req, c);
    } catch (const std::exception& e) {
      if (!c.failed) {
        c.keep_alive = false;
        c.respond(500, "application/json", error_json(std::string("internal error: ") + e.what()));
      }
      return;
    }
    if (!c.keep_alive || c.failed) return;
  }
}

}  // namespace ost::http
