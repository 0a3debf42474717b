// A plain-socket HTTP client for the server tests.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <string>

#include "server/http.h"

namespace ost::testing {

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                            // de-chunked
};

inline int connect_local(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

inline bool send_str(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

// Parses one response from the front of `buf`; false when incomplete.
inline bool parse_response(std::string& buf, HttpResponse& r, bool eof) {
  size_t he = buf.find("\r\n\r\n");
  if (he == std::string::npos) return false;
  r = {};
  r.status = std::stoi(buf.substr(9, 3));
  size_t pos = buf.find("\r\n") + 2;
  while (pos < he) {
    size_t e = buf.find("\r\n", pos);
    std::string line = buf.substr(pos, e - pos);
    size_t c = line.find(':');
    std::string k = line.substr(0, c);
    for (auto& ch : k) ch = char(std::tolower(ch));
    std::string v = line.substr(c + 1);
    while (!v.empty() && v[0] == ' ') v.erase(0, 1);
    r.headers[k] = v;
    pos = e + 2;
  }
  const size_t body = he + 4;
  if (r.status == 100) {
    buf.erase(0, body);
    return parse_response(buf, r, eof);
  }
  if (r.headers.count("content-length")) {
    size_t n = std::stoul(r.headers["content-length"]);
    if (buf.size() < body + n) return false;
    r.body = buf.substr(body, n);
    buf.erase(0, body + n);
    return true;
  }
  if (r.headers["transfer-encoding"] == "chunked") {
    auto cr = http::decode_chunked(std::string_view(buf).substr(body), r.body, 1 << 30);
    if (cr.state != http::ParseState::kDone) return false;
    buf.erase(0, body + cr.consumed);
    return true;
  }
  if (!eof) return false;
  r.body = buf.substr(body);
  buf.clear();
  return true;
}

// Reads one response from fd (blocking).
inline HttpResponse read_response(int fd, std::string& buf) {
  HttpResponse r;
  char tmp[65536];
  for (;;) {
    if (parse_response(buf, r, false)) return r;
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) {
      if (!parse_response(buf, r, true)) r.status = -1;
      return r;
    }
    buf.append(tmp, size_t(n));
  }
}

inline std::string make_request(const std::string& method, const std::string& path, const std::string& body,
                                const std::string& extra_headers = "", bool close = true) {
  std::string s = method + " " + path + " HTTP/1.1\r\nHost: localhost\r\n" + extra_headers;
  if (!body.empty() || method == "POST") s += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  if (close) s += "Connection: close\r\n";
  return s + "\r\n" + body;
}

inline HttpResponse http_request(int port, const std::string& method, const std::string& path,
                                 const std::string& body = "", const std::string& extra_headers = "") {
  int fd = connect_local(port);
  if (fd < 0) return {};
  send_str(fd, make_request(method, path, body, extra_headers));
  std::string buf;
  HttpResponse r = read_response(fd, buf);
  ::close(fd);
  return r;
}

}  // namespace ost::testing
