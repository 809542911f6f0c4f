#include "support/ad_check.hpp"

namespace amari::test {

void expect_ad(const AdCase& c, std::uint64_t seed) {
  INFO("case: " << c.primitive << " / " << c.label);
  CheckOptions options;
  options.seed = seed;
  const CheckReport report = check_rules(c.label, c, options);
  INFO(report.str());
  for (const CheckResult& r : report.checks) {
    INFO(r.name << ": error " << r.error << ", tolerance " << r.tolerance << " " << r.detail);
    CHECK(r.passed());
  }
  // The full list for a function of n inputs (check_rules.hpp): a report that stopped early (the
  // modes returned values of different shapes) has fewer, and already holds a failed check.
  const std::size_t n = c.inputs.size();
  CHECK(report.checks.size() == 14 + 3 * n + (n > 1 ? 3 * n : 0));
}

void expect_errors(const AdCase& c) {
  INFO("case: " << c.primitive << " / " << c.label);
  const auto x = sample_inputs(c.inputs, 7);
  auto contains = [](const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; };
  {
    Tape<double> tape;
    std::vector<Var<double>> xv;
    for (const auto& t : x) xv.push_back(tape.variable(t));
    tape.clear();
    try {
      (void)c.var_d(xv);
      FAIL("no TapeError for inputs from a cleared tape");
    } catch (const TapeError& e) {
      INFO(e.what());
      CHECK(contains(e.what(), "cleared"));
    }
  }
  {
    std::vector<Var<double>> xv;
    {
      Tape<double> tape;
      for (const auto& t : x) xv.push_back(tape.variable(t));
    }
    CHECK_THROWS_AS(c.var_d(xv), TapeError);
  }
  if (x.size() > 1) {
    Tape<double> t1, t2;
    std::vector<Var<double>> xv;
    for (std::size_t i = 0; i < x.size(); ++i) xv.push_back(i == 0 ? t1.variable(x[i]) : t2.variable(x[i]));
    try {
      (void)c.var_d(xv);
      FAIL("no TapeError for inputs from two tapes");
    } catch (const TapeError& e) {
      INFO(e.what());
      CHECK(contains(e.what(), "two different tapes"));
    }
  }
  for (const auto& shapes : c.bad_shapes) {
    std::vector<Tensor<double>> bad;
    for (const auto& s : shapes) bad.push_back(Tensor<double>(s));
    try {
      (void)c.plain_d(bad);
      FAIL("no ShapeError for shapes starting with " << shapes[0].str());
    } catch (const ShapeError& e) {
      INFO(e.what());
      CHECK(contains(e.what(), c.primitive));
      for (const auto& s : shapes) CHECK(contains(e.what(), s.str()));
    }
  }
}

}  // namespace amari::test
