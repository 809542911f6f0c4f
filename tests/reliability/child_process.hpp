// Runs a piece of a test in a forked child process, so that an input which crashes the library
// fails one check instead of killing the whole test program (and every check after it). Used for
// the hostile inputs that are known or suspected to crash, and to replay fuzz inputs.
#pragma once

#include <cerrno>
#include <csignal>
#include <exception>
#include <ostream>
#include <stdexcept>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

#include <amari/autodiff/error.hpp>

namespace amari::test {

/// How a call ended.
enum class Outcome { returned, amari_error, other_exception, crashed };

inline const char* to_string(Outcome o) {
  switch (o) {
    case Outcome::returned:
      return "returned";
    case Outcome::amari_error:
      return "threw an amari::Error";
    case Outcome::other_exception:
      return "threw an exception that is not an amari::Error";
    case Outcome::crashed:
      return "crashed (signal, sanitizer report or abnormal exit)";
  }
  return "?";
}

/// How the child ended, and the exception message if it threw.
struct ChildResult {
  Outcome outcome = Outcome::crashed;
  std::string message;
  friend bool operator==(const ChildResult& r, Outcome o) { return r.outcome == o; }
};

inline std::ostream& operator<<(std::ostream& os, Outcome o) {
  return os << to_string(o);
}
inline std::ostream& operator<<(std::ostream& os, const ChildResult& r) {
  os << to_string(r.outcome);
  if (!r.message.empty()) os << " (" << r.message << ")";
  return os;
}

/// Calls f() in a child process and reports how it ended. The child leaves through _exit, so
/// neither the test framework's nor the sanitizers' exit handlers run twice, dies of its own
/// signal if it crashes, and is killed after kTimeoutSeconds. Keep f free of OpenMP parallel
/// regions (tensors below the 65536-element threshold): a forked child must not use the parent's
/// OpenMP thread pool. A child still running after this long is killed (SIGALRM) and counts as
/// crashed.
inline constexpr unsigned kTimeoutSeconds = 120;

template <class F>
ChildResult run_in_child(F f) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("run_in_child: pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("run_in_child: fork failed");
  if (pid == 0) {
    ::close(fds[0]);
    // Catch2's handlers would print a second test report from the child.
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) std::signal(sig, SIG_DFL);
    // Corrupted memory can also mean an endless loop: give up after kTimeoutSeconds.
    ::alarm(kTimeoutSeconds);
    int code = 0;
    std::string what;
    try {
      f();
    } catch (const amari::Error& e) {
      code = 3;
      what = e.what();
    } catch (const std::exception& e) {
      code = 4;
      what = e.what();
    } catch (...) {
      code = 4;
    }
    if (!what.empty()) (void)!::write(fds[1], what.data(), what.size());
    ::_exit(code);
  }
  ::close(fds[1]);
  ChildResult r;
  char buf[512];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0) {
      r.message.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  if (WIFEXITED(status)) {
    switch (WEXITSTATUS(status)) {
      case 0:
        r.outcome = Outcome::returned;
        break;
      case 3:
        r.outcome = Outcome::amari_error;
        break;
      case 4:
        r.outcome = Outcome::other_exception;
        break;
      default:
        r.outcome = Outcome::crashed;  // e.g. a sanitizer report (exit code 1)
    }
  } else {
    r.outcome = Outcome::crashed;
    if (WIFSIGNALED(status)) r.message = "signal " + std::to_string(WTERMSIG(status));
  }
  return r;
}

}  // namespace amari::test
