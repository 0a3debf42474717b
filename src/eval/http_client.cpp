#include "eval/http_client.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace ost::eval {

Result<HttpUrl> parse_http_url(const std::string& url) {
  HttpUrl u;
  std::string rest;
  if (url.rfind("http://", 0) == 0) rest = url.substr(7);
  else if (url.rfind("https://", 0) == 0)
    return make_error("%s: https is not supported; use http:// (a local TLS proxy can front an https peer)", url.c_str());
  else return make_error("%s: the URL must start with http://", url.c_str());
  size_t slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  u.path = slash == std::string::npos ? "/" : rest.substr(slash);
  if (hostport.empty()) return make_error("%s: no host", url.c_str());
  if (hostport[0] == '[') {  // [::1]:8080
    size_t e = hostport.find(']');
    if (e == std::string::npos) return make_error("%s: bad IPv6 host", url.c_str());
    u.host = hostport.substr(1, e - 1);
    if (e + 1 < hostport.size()) {
      if (hostport[e + 1] != ':') return make_error("%s: bad port", url.c_str());
      hostport = "x" + hostport.substr(e + 1);
    } else {
      hostport.clear();
    }
    if (!hostport.empty()) hostport = hostport.substr(1);
  } else {
    size_t c = hostport.rfind(':');
    u.host = hostport.substr(0, c);
    hostport = c == std::string::npos ? "" : hostport.substr(c);
  }
  if (!hostport.empty()) {
    std::string p = hostport.substr(1);
    if (p.empty() || p.size() > 5 || !std::all_of(p.begin(), p.end(), [](char ch) { return std::isdigit(uint8_t(ch)); }))
      return make_error("%s: bad port", url.c_str());
    u.port = std::stoi(p);
    if (u.port <= 0 || u.port > 65535) return make_error("%s: bad port", url.c_str());
  }
  return u;
}

namespace {

class Socket {
 public:
  ~Socket() {
    if (fd >= 0) ::close(fd);
  }
  int fd = -1;
};

Status connect_to(const HttpUrl& u, Socket& s, int timeout_s) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  const std::string port = std::to_string(u.port);
  if (int rc = ::getaddrinfo(u.host.c_str(), port.c_str(), &hints, &res); rc != 0)
    return make_error("cannot resolve %s: %s", u.host.c_str(), gai_strerror(rc));
  std::string why = "no address";
  for (addrinfo* a = res; a; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    timeval tv{timeout_s, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      s.fd = fd;
      break;
    }
    why = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (s.fd < 0) return make_error("cannot connect to %s:%d: %s", u.host.c_str(), u.port, why.c_str());
  return Status::ok();
}

bool send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

// De-chunks incrementally: feeds the payload to `out`.
class Dechunker {
 public:
  // Returns false on a framing error; sets done at the last chunk.
  bool feed(std::string_view in, const std::function<bool(std::string_view)>& out, bool& stop) {
    buf_.append(in);
    for (;;) {
      if (done) return true;
      if (remaining_ == 0) {
        size_t e = buf_.find("\r\n");
        if (e == std::string::npos) return buf_.size() < 1024;
        std::string line = buf_.substr(0, e);
        buf_.erase(0, e + 2);
        if (expect_crlf_) {  // the CRLF after a chunk's data
          expect_crlf_ = false;
          if (!line.empty()) return false;
          continue;
        }
        char* end = nullptr;
        unsigned long long n = std::strtoull(line.c_str(), &end, 16);
        if (end == line.c_str()) return false;
        if (n == 0) {
          done = true;
          return true;
        }
        remaining_ = n;
      }
      if (buf_.empty()) return true;
      size_t take = size_t(std::min<unsigned long long>(remaining_, buf_.size()));
      if (!out(std::string_view(buf_).substr(0, take))) {
        stop = true;
        return true;
      }
      buf_.erase(0, take);
      remaining_ -= take;
      if (remaining_ == 0) expect_crlf_ = true;
    }
  }
  bool done = false;

 private:
  std::string buf_;
  unsigned long long remaining_ = 0;
  bool expect_crlf_ = false;
};

}  // namespace

Result<HttpReply> http_call(const HttpUrl& url, const std::string& method, const std::string& body,
                            const std::vector<std::pair<std::string, std::string>>& headers, const BodyFn& on_body,
                            int timeout_s) {
  Socket s;
  OST_TRY(connect_to(url, s, timeout_s));
  std::string host = url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  std::string req = method + " " + url.path + " HTTP/1.1\r\nHost: " + host + ":" + std::to_string(url.port) +
                    "\r\nConnection: close\r\nUser-Agent: ostrakon-eval\r\n";
  for (auto& [k, v] : headers) req += k + ": " + v + "\r\n";
  if (!body.empty() || method == "POST") req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  if (!send_all(s.fd, req)) return make_error("sending to %s:%d failed", url.host.c_str(), url.port);

  HttpReply reply;
  std::string buf;
  char tmp[65536];
  bool head_done = false, chunked = false, stop = false;
  long long content_length = -1, received = 0;
  Dechunker dechunk;
  BodyFn sink = [&](std::string_view piece) {
    if (on_body && reply.status / 100 == 2) return on_body(piece);
    reply.body.append(piece);
    return true;
  };
  for (;;) {
    ssize_t n = ::recv(s.fd, tmp, sizeof tmp, 0);
    if (n < 0) return make_error("reading from %s:%d: %s", url.host.c_str(), url.port,
                                 errno == EAGAIN ? "timed out" : std::strerror(errno));
    if (n == 0) break;
    std::string_view in(tmp, size_t(n));
    if (!head_done) {
      buf.append(in);
      size_t he = buf.find("\r\n\r\n");
      if (he == std::string::npos) {
        if (buf.size() > (64 << 10)) return make_error("response head too large");
        continue;
      }
      if (buf.size() < 12 || buf.compare(0, 5, "HTTP/") != 0) return make_error("not an HTTP response");
      reply.status = std::atoi(buf.c_str() + 9);
      std::string head = buf.substr(0, he);
      for (auto& ch : head) ch = char(std::tolower(uint8_t(ch)));
      chunked = head.find("\r\ntransfer-encoding: chunked") != std::string::npos;
      if (size_t cl = head.find("\r\ncontent-length:"); cl != std::string::npos)
        content_length = std::atoll(head.c_str() + cl + 17);
      head_done = true;
      std::string rest = buf.substr(he + 4);
      buf.clear();
      in = std::string_view();
      if (rest.empty()) continue;
      // Fall through with the rest of the first read as body bytes.
      if (chunked) {
        if (!dechunk.feed(rest, sink, stop)) return make_error("bad chunked encoding");
      } else {
        received += (long long)rest.size();
        stop = !sink(rest);
      }
    } else if (chunked) {
      if (!dechunk.feed(in, sink, stop)) return make_error("bad chunked encoding");
    } else {
      received += n;
      stop = !sink(in);
    }
    if (stop || (chunked && dechunk.done) || (content_length >= 0 && received >= content_length)) break;
  }
  if (!head_done) return make_error("%s:%d closed the connection without answering", url.host.c_str(), url.port);
  return reply;
}

bool SseReader::feed(std::string_view bytes, const std::function<bool(const std::string&)>& fn) {
  buf_.append(bytes);
  for (;;) {
    size_t e = buf_.find('\n');
    if (e == std::string::npos) return true;
    std::string line = buf_.substr(0, e);
    buf_.erase(0, e + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind("data:", 0) != 0) continue;
    std::string data = line.substr(5);
    if (!data.empty() && data[0] == ' ') data.erase(0, 1);
    if (!fn(data)) return false;
  }
}

}  // namespace ost::eval
