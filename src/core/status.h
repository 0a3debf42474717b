// Status / Result<T>: how errors cross module edges. No exception escapes a module's public API.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace ost {

struct Error {
  std::string message;
};

class Status {
 public:
  Status() = default;
  Status(Error e) : err_(std::move(e.message)), failed_(true) {}  // NOLINT: implicit on purpose
  static Status ok() { return Status(); }
  bool is_ok() const { return !failed_; }
  explicit operator bool() const { return !failed_; }
  const std::string& message() const { return err_; }

 private:
  std::string err_;
  bool failed_ = false;
};

template <class T>
class Result {
 public:
  Result(T v) : v_(std::move(v)) {}          // NOLINT: implicit on purpose
  Result(Error e) : v_(std::move(e)) {}      // NOLINT
  Result(Status s) : v_(Error{s.message()}) {}  // only for a failed Status
  bool is_ok() const { return v_.index() == 0; }
  explicit operator bool() const { return is_ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const std::string& message() const { return std::get<1>(v_).message; }
  Status status() const { return is_ok() ? Status() : Status(Error{message()}); }

 private:
  std::variant<T, Error> v_;
};

template <class... Args>
Error make_error(const char* fmt, Args... args) {
  char buf[1024];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return Error{buf};
}
inline Error make_error(const std::string& s) { return Error{s}; }

}  // namespace ost

// Propagate a failed Status/Result out of the calling function.
#define OST_TRY(expr)                                   \
  do {                                                  \
    auto _st = (expr);                                  \
    if (!_st.is_ok()) return ::ost::Error{_st.message()}; \
  } while (0)

// Internal invariant: a bug, not a user error. Aborts with file and line.
#define OST_CHECK(cond)                                                              \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)
