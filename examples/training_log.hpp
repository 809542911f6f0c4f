// Training UX shared by the Fashion-MNIST examples: per-step records written as CSV and/or JSON
// Lines (--log-csv FILE, --log-json FILE), and a progress display that is a bar on a terminal and
// an occasional plain line otherwise (so CI logs stay short).
//
// Both files hold the same records, one per optimizer step, epoch and evaluation, in this column order:
//   record,optimizer,epoch,step,seconds,loss,lambda,rho,cg_iterations,test_loss,test_accuracy
// record is "step", "epoch" or "evaluation" (a test evaluation within an epoch, train_cnn
// --eval-every); step counts the optimizer's steps from 1 across epochs; seconds is
// the training time of this optimizer so far (test-set evaluation excluded). A step record's loss
// is the minibatch loss before the step; lambda, rho and cg_iterations are present only for the
// optimizers that have them (natural gradient, Hessian-free). An epoch record's loss is the mean
// training loss of the epoch, with the test loss and accuracy (an evaluation record's: of the epoch
// so far). A field that does not apply is
// empty in the CSV and absent from the JSON object; a non-finite number is written as nan/inf in
// the CSV and as null in JSON (which has no NaN).
#pragma once

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <amari/autodiff/error.hpp>

namespace example {

/// One line of the training log (see the file comment for the meaning of each field).
struct LogRecord {
  std::string record = "step";  ///< "step", "epoch" or "evaluation"
  std::string optimizer;
  long epoch = 0;
  long step = 0;
  double seconds = 0;
  double loss = 0;
  std::optional<double> lambda{}, rho{};
  std::optional<int> cg_iterations{};
  std::optional<double> test_loss{}, test_accuracy{};
};

/// A CSV field: quoted (with doubled quotes) when it holds a comma, quote or line break (RFC 4180).
inline std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

/// A JSON string literal with quotes, backslashes and control characters escaped (RFC 8259).
inline std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

/// A number with up to 10 significant digits; "nan"/"inf"/"-inf" (CSV) or "null" (JSON) when not
/// finite.
inline std::string log_number(double x, bool json) {
  if (!std::isfinite(x)) return json ? "null" : (std::isnan(x) ? "nan" : (x > 0 ? "inf" : "-inf"));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", x);
  return buf;
}

/// The CSV header line (without the line break).
inline const char* csv_header() {
  return "record,optimizer,epoch,step,seconds,loss,lambda,rho,cg_iterations,test_loss,test_"
         "accuracy";
}

/// One CSV line (without the line break); absent optional fields are empty.
inline std::string csv_line(const LogRecord& r) {
  auto opt = [](const std::optional<double>& x) {
    return x ? log_number(*x, false) : std::string();
  };
  std::ostringstream o;
  o << csv_field(r.record) << ',' << csv_field(r.optimizer) << ',' << r.epoch << ',' << r.step
    << ',' << log_number(r.seconds, false) << ',' << log_number(r.loss, false) << ','
    << opt(r.lambda) << ',' << opt(r.rho) << ','
    << (r.cg_iterations ? std::to_string(*r.cg_iterations) : "") << ',' << opt(r.test_loss) << ','
    << opt(r.test_accuracy);
  return o.str();
}

/// One JSON object on one line (JSON Lines); absent optional fields are left out.
inline std::string json_line(const LogRecord& r) {
  std::ostringstream o;
  o << "{\"record\":" << json_string(r.record) << ",\"optimizer\":" << json_string(r.optimizer)
    << ",\"epoch\":" << r.epoch << ",\"step\":" << r.step
    << ",\"seconds\":" << log_number(r.seconds, true) << ",\"loss\":" << log_number(r.loss, true);
  if (r.lambda) o << ",\"lambda\":" << log_number(*r.lambda, true);
  if (r.rho) o << ",\"rho\":" << log_number(*r.rho, true);
  if (r.cg_iterations) o << ",\"cg_iterations\":" << *r.cg_iterations;
  if (r.test_loss) o << ",\"test_loss\":" << log_number(*r.test_loss, true);
  if (r.test_accuracy) o << ",\"test_accuracy\":" << log_number(*r.test_accuracy, true);
  o << '}';
  return o.str();
}

/// Writes every record to the CSV and/or JSON Lines file given ("" = not written). Lines are
/// flushed as they are written, so a run that is stopped early leaves a readable log.
class TrainingLog {
 public:
  TrainingLog() = default;
  /// Throws amari::IoError naming the file when one cannot be opened for writing.
  TrainingLog(const std::string& csv_path, const std::string& json_path) {
    if (!csv_path.empty()) {
      csv_.open(csv_path);
      if (!csv_)
        throw amari::IoError("training log: cannot open '" + csv_path +
                             "' for writing (--log-csv)");
      csv_ << csv_header() << '\n' << std::flush;
    }
    if (!json_path.empty()) {
      json_.open(json_path);
      if (!json_)
        throw amari::IoError("training log: cannot open '" + json_path +
                             "' for writing (--log-json)");
    }
  }
  /// Appends one record to each open file.
  void write(const LogRecord& r) {
    if (csv_.is_open()) csv_ << csv_line(r) << '\n' << std::flush;
    if (json_.is_open()) json_ << json_line(r) << '\n' << std::flush;
  }

 private:
  std::ofstream csv_, json_;
};

/// Progress within an epoch. On a terminal: a bar redrawn in place at most ~10 times a second,
/// erased when the epoch ends (the example then prints its epoch line). Otherwise (a pipe, a CI
/// log, a rank under an MPI launcher): one plain line at most every `plain_every_seconds`, so short
/// runs print none.
class Progress {
 public:
  explicit Progress(std::string label, double plain_every_seconds = 30)
      : label_(std::move(label)),
        tty_(isatty(fileno(stdout)) != 0 && !under_mpi_launcher()),
        plain_every_(plain_every_seconds) {}

  /// OpenMPI's mpirun (and other PMI launchers) give every rank a pseudo-terminal but forward its
  /// output line by line into one stream, a CI log as often as a terminal, where redrawn bars
  /// become carriage-return noise.
  static bool under_mpi_launcher() {
    return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr;
  }
  /// Starts an epoch of `total` steps.
  void start(long epoch, long total) {
    epoch_ = epoch, total_ = total;
    last_ = std::chrono::steady_clock::now();
  }
  /// Reports `done` steps of the epoch finished, the last minibatch loss `loss`.
  void update(long done, double loss) {
    const auto now = std::chrono::steady_clock::now();
    const double since = std::chrono::duration<double>(now - last_).count();
    if (tty_) {
      if (since < 0.1 && done < total_) return;
      constexpr int width = 30;
      const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
      std::printf("\r%s epoch %ld [%s%s] %ld/%ld  loss %.4f ", label_.c_str(), epoch_,
                  std::string(static_cast<std::size_t>(filled), '#').c_str(),
                  std::string(static_cast<std::size_t>(width - filled), '.').c_str(), done, total_,
                  loss);
      std::fflush(stdout);
      drawn_ = true;
    } else {
      if (since < plain_every_) return;
      std::printf("%s epoch %ld: step %ld of %ld, loss %.4f\n", label_.c_str(), epoch_, done,
                  total_, loss);
      std::fflush(stdout);
    }
    last_ = now;
  }
  /// Erases the bar (terminal only) so that the next line starts clean.
  void finish() {
    if (tty_ && drawn_) std::printf("\r%*s\r", 100, "");
    drawn_ = false;
  }

 private:
  std::string label_;
  bool tty_;
  double plain_every_;
  long epoch_ = 0, total_ = 0;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_;
};

/// Training time of one optimizer: runs while started, paused during test-set evaluation.
class TrainingClock {
 public:
  void resume() { t0_ = std::chrono::steady_clock::now(), running_ = true; }
  void pause() {
    if (running_) total_ += since_resume();
    running_ = false;
  }
  /// Seconds of training so far.
  double seconds() const { return total_ + (running_ ? since_resume() : 0.0); }

 private:
  double since_resume() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }
  std::chrono::steady_clock::time_point t0_{};
  double total_ = 0;
  bool running_ = false;
};

}  // namespace example
