// The training log of the examples (examples/training_log.hpp): CSV and JSON Lines records.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "../../examples/training_log.hpp"
#include "support/temp_dir.hpp"

namespace {

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

}  // namespace

TEST_CASE(
    "training log: a step record has its diagnostics, an epoch record its test metrics, in both "
    "formats") {
  example::LogRecord step{
      .optimizer = "natural gradient", .epoch = 1, .step = 3, .seconds = 0.25, .loss = 1.5};
  step.lambda = 0.5, step.rho = 0.75, step.cg_iterations = 17;
  CHECK(example::csv_line(step) == "step,natural gradient,1,3,0.25,1.5,0.5,0.75,17,,");
  CHECK(
      example::json_line(step) ==
      R"({"record":"step","optimizer":"natural gradient","epoch":1,"step":3,"seconds":0.25,"loss":1.5,)"
      R"("lambda":0.5,"rho":0.75,"cg_iterations":17})");
  const example::LogRecord epoch{.record = "epoch",
                                 .optimizer = "adam",
                                 .epoch = 2,
                                 .step = 936,
                                 .seconds = 4,
                                 .loss = 0.375,
                                 .test_loss = 0.5,
                                 .test_accuracy = 0.875};
  CHECK(example::csv_line(epoch) == "epoch,adam,2,936,4,0.375,,,,0.5,0.875");
  CHECK(example::json_line(epoch) ==
        R"({"record":"epoch","optimizer":"adam","epoch":2,"step":936,"seconds":4,"loss":0.375,)"
        R"("test_loss":0.5,"test_accuracy":0.875})");
}

TEST_CASE(
    "training log: names are escaped for CSV and JSON, and non-finite numbers stay parseable") {
  const example::LogRecord r{
      .optimizer = "a,\"b\"\n\\c", .epoch = 1, .step = 1, .seconds = 0, .loss = NAN};
  CHECK(example::csv_line(r) == "step,\"a,\"\"b\"\"\n\\c\",1,1,0,nan,,,,,");
  CHECK(
      example::json_line(r) ==
      R"({"record":"step","optimizer":"a,\"b\"\n\\c","epoch":1,"step":1,"seconds":0,"loss":null})");
  CHECK(example::json_string(std::string("\x01", 1)) == R"("\u0001")");
  CHECK(example::log_number(INFINITY, false) == "inf");
  CHECK(example::log_number(-INFINITY, true) == "null");
}

TEST_CASE(
    "training log: the files get a header (CSV only) and exactly one line per record written") {
  amari::test::TempDir dir("training-log");
  {
    example::TrainingLog log(dir.file("log.csv"), dir.file("log.jsonl"));
    for (long s = 1; s <= 3; ++s)
      log.write({.optimizer = "adam", .epoch = 1, .step = s, .seconds = 0.5 * s, .loss = 1});
  }
  const auto csv = lines_of(dir.file("log.csv"));
  REQUIRE(csv.size() == 4);
  CHECK(csv[0] == example::csv_header());
  CHECK(csv[3] == "step,adam,1,3,1.5,1,,,,,");
  const auto json = lines_of(dir.file("log.jsonl"));
  REQUIRE(json.size() == 3);
  CHECK(json[0].front() == '{');
  CHECK(json[2] ==
        R"({"record":"step","optimizer":"adam","epoch":1,"step":3,"seconds":1.5,"loss":1})");
}

TEST_CASE(
    "training log: a file that cannot be opened is an IoError naming the file and the option") {
  amari::test::TempDir dir("training-log");
  const std::string bad = dir.file("no/such/dir/log.csv");
  REQUIRE_THROWS_AS(example::TrainingLog(bad, ""), amari::IoError);
  REQUIRE_THROWS_WITH(example::TrainingLog("", bad),
                      Catch::Contains(bad) && Catch::Contains("--log-json"));
}
