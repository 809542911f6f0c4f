// Runs a piece of a test in a forked child process, so that an input which crashes the library
// fails one check instead of killing the whole test program (and every test case after it).
// Used for the hostile inputs that are known or suspected to crash.
#pragma once

#include <exception>
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
    case Outcome::returned: return "returned";
    case Outcome::amari_error: return "threw an amari::Error";
    case Outcome::other_exception: return "threw an exception that is not an amari::Error";
    case Outcome::crashed: return "crashed (signal, sanitizer report or abnormal exit)";
  }
  return "?";
}

/// Calls f() in a child process and reports how it ended. The child leaves through _exit, so
/// neither the test framework's nor the sanitizers' exit handlers run twice. Keep f small and
/// free of OpenMP parallel regions (tensors below the 65536-element threshold): a forked child
/// must not use the parent's OpenMP thread pool.
template <class F>
Outcome run_in_child(F f) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("run_in_child: fork failed");
  if (pid == 0) {
    int code = 0;
    try {
      f();
    } catch (const amari::Error&) {
      code = 3;
    } catch (...) {
      code = 4;
    }
    ::_exit(code);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  if (!WIFEXITED(status)) return Outcome::crashed;
  switch (WEXITSTATUS(status)) {
    case 0: return Outcome::returned;
    case 3: return Outcome::amari_error;
    case 4: return Outcome::other_exception;
    default: return Outcome::crashed;  // e.g. a sanitizer report (exit code 1)
  }
}

}  // namespace amari::test
