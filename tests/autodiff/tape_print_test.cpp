// Seeing what the tape does: the printed table (golden text), the Graphviz export (nodes, edges and
// labels parsed back; accepted by `dot` when it is installed) and the sweep observer (every
// reported record once per sweep, in sweep order, with the tangents and adjoints the sweeps
// compute). Oracles: separate sweeps requesting intermediates, and central finite differences of
// adjoints for the second-order sweep.
#include <array>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <amari/autodiff/autodiff.hpp>
#include <amari/autodiff/tape_print.hpp>

#include "support/random.hpp"
#include "support/temp_dir.hpp"

namespace {

using amari::NodeInfo;
using amari::Shape;
using amari::SweepKind;
using amari::Tape;
using amari::Tensor;
using amari::Var;
using amari::test::max_abs_diff;
using amari::test::normal_tensor;
using amari::test::Rng;
using Catch::Matchers::Contains;

using TV = std::vector<Tensor<double>>;
using VV = std::vector<Var<double>>;

// Remembers every call with a copy of the tensors it was shown.
struct Recorder final : amari::SweepObserver<double> {
  struct Event {
    SweepKind kind;
    NodeInfo node;
    Tensor<double> value;          // tangent (forward) or adjoint (reverse sweeps)
    Tensor<double> value_tangent;  // adjoint tangent (second-order sweep), undefined if null
  };
  std::vector<SweepKind> begun, ended;
  std::vector<Event> events;

  void on_begin(SweepKind kind) override { begun.push_back(kind); }
  void on_end(SweepKind kind) override { ended.push_back(kind); }
  void on_forward(const NodeInfo& node, const Tensor<double>& tangent) override {
    events.push_back({current(), node, tangent.clone(), {}});
  }
  void on_reverse(const NodeInfo& node, const Tensor<double>& adjoint,
                  const Tensor<double>* adjoint_tangent) override {
    events.push_back({current(), node, adjoint.clone(),
                      adjoint_tangent ? adjoint_tangent->clone() : Tensor<double>{}});
  }
  SweepKind current() const { return begun.back(); }
  std::vector<std::size_t> order(SweepKind kind) const {
    std::vector<std::size_t> idx;
    for (const auto& e : events)
      if (e.kind == kind) idx.push_back(e.node.index);
    return idx;
  }
  const Event& find(SweepKind kind, std::size_t index) const {
    for (const auto& e : events)
      if (e.kind == kind && e.node.index == index) return e;
    FAIL("no event for record " << index);
    return events.front();
  }
};

// x (3, 4), w (4, 5) variables; c (3, 5) constant. Records, in order:
//   #0 h = matmul(x, w)   #1 t = tanh(h)   #2 e = exp(w)   #3 m = t * c
//   #4 s = sum(m)         #5 q = sum(e)    #6 d = square(x)  (read by no output)
struct Graph {
  Tape<double> tape;
  Tensor<double> x0, w0, c0;
  VV in;    // x, w
  VV recs;  // the outputs of records #0..#6, in recording order
};

VV record_graph(Tape<double>& tape, const Tensor<double>& x, const Tensor<double>& w,
                const Tensor<double>& c, VV& in) {
  in = {tape.variable(x, "x"), tape.variable(w, "w")};
  const Var<double> cv(c);
  VV r;
  r.push_back(amari::matmul(in[0], in[1]));
  r.push_back(amari::tanh(r[0]));
  r.push_back(amari::exp(in[1]));
  r.push_back(amari::mul(r[1], cv));
  r.push_back(amari::sum(r[3]));
  r.push_back(amari::sum(r[2]));
  r.push_back(amari::square(in[0]));
  return r;
}

void make_graph(Graph& g) {
  Rng rng(7);
  g.x0 = normal_tensor<double>(Shape{3, 4}, rng);
  g.w0 = normal_tensor<double>(Shape{4, 5}, rng);
  g.c0 = normal_tensor<double>(Shape{3, 5}, rng);
  g.recs = record_graph(g.tape, g.x0, g.w0, g.c0, g.in);
}

Tensor<double> one() {
  return Tensor<double>::scalar(1.0);
}

// Lines "  id [attrs];" and "  a -> b [attrs];" of a DOT text.
struct ParsedDot {
  std::map<std::string, std::string> nodes;             // id -> attribute text
  std::set<std::pair<std::string, std::string>> edges;  // (from, to)
  std::map<std::pair<std::string, std::string>, std::string> edge_attrs;
};

ParsedDot parse_dot(const std::string& dot) {
  ParsedDot p;
  const std::regex node_re(R"(^  ([A-Za-z0-9_]+) \[(.*)\];$)");
  const std::regex edge_re(R"(^  ([A-Za-z0-9_]+) -> ([A-Za-z0-9_]+)( \[(.*)\])?;$)");
  std::istringstream in(dot);
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_match(line, m, edge_re)) {
      p.edges.insert({m[1], m[2]});
      p.edge_attrs[{m[1], m[2]}] = m[4];
    } else if (std::regex_match(line, m, node_re) && m[1] != "node" && m[1] != "edge") {
      p.nodes[m[1]] = m[2];
    }
  }
  return p;
}

std::string label_of(const std::string& attrs) {
  std::smatch m;
  const std::regex label_re(R"re(label="((?:[^"\\]|\\.)*)")re");
  return std::regex_search(attrs, m, label_re) ? m[1].str() : std::string("<none>");
}

}  // namespace

TEST_CASE("tape printing: the table of sum(tanh(x) * x) matches the golden text", "[tape_print]") {
  Tape<double> tape;
  const Var<double> x =
      tape.variable(Tensor<double>::from({2, 3}, {0.5, -1.0, 2.0, 0.1, -0.3, 1.5}), "x");
  const Var<double> f = amari::sum(amari::tanh(x) * x);
  (void)f;
  // tanh keeps its output y; mul keeps both inputs (x0 is tanh's y, the same storage, x1 is x);
  // sum keeps nothing. The total counts the shared tensor once: 48 + 48 bytes.
  const std::string golden =
      "tape: 3 records, 4 slots (1 variable), residuals hold 96 bytes\n"
      "variables:\n"
      "  s0  \"x\"  (2, 3)\n"
      "#  op    inputs             output     saved                 bytes\n"
      "0  tanh  s0 var \"x\"         s1 (2, 3)  y (2, 3)                 48\n"
      "1  mul   s1 #0, s0 var \"x\"  s2 (2, 3)  x0 (2, 3), x1 (2, 3)     96\n"
      "2  sum   s2 #1              s3 ()      -                         0\n";
  CHECK(amari::to_string(tape) == golden);
  CHECK(tape.memory_bytes() == 96);  // the header total is the tape's own accounting
}

TEST_CASE("tape printing: attributes, constants and unnamed variables are shown", "[tape_print]") {
  Tape<float> tape;
  const Var<float> x = tape.variable(Tensor<float>::full({2, 3}, 1.0f));
  const Var<float> c(Tensor<float>::full({2, 3}, 2.0f));
  const Var<float> y = amari::sum(amari::scale(amari::mul(c, x), 2.0), 1);
  (void)y;
  const std::string text = amari::to_string(tape);
  CHECK_THAT(text, Contains("s0  -  (2, 3)"));         // unnamed variable
  CHECK_THAT(text, Contains("const (2, 3), s0 var"));  // a saved constant shows its shape
  CHECK_THAT(text, Contains("affine a=2 b=0"));
  CHECK_THAT(text, Contains("sum axis=1 keep_dims=0"));
  CHECK_THAT(amari::to_string(Tape<float>{}), Contains("tape: 0 records, 0 slots (0 variables)"));
  // clear() forgets the names with the records.
  tape.clear();
  const Var<float> z = tape.variable(Tensor<float>::scalar(1.0f));
  (void)z;
  CHECK_THAT(amari::to_string(tape), Contains("s0  -  ()"));
}

TEST_CASE("tape printing: DOT of a known graph has the expected nodes, edges and labels",
          "[tape_print]") {
  Tape<double> tape;
  const Var<double> x = tape.variable(Tensor<double>(Shape{3, 4}), "x");
  const Var<double> w = tape.variable(Tensor<double>(Shape{4, 5}), "W \"1\"");  // quoted in DOT
  const Var<double> c(Tensor<double>(Shape{3, 5}));
  const Var<double> y = amari::sum(amari::tanh(amari::matmul(x, w)) * c, 1);
  (void)y;
  const std::string dot = amari::to_dot(tape);
  INFO(dot);
  REQUIRE(dot.rfind("digraph \"tape\" {\n", 0) == 0);
  REQUIRE(dot.substr(dot.size() - 2) == "}\n");
  const ParsedDot p = parse_dot(dot);

  const std::set<std::string> ids{"s0", "s1", "n0", "n1", "n2", "n3", "c2_1"};
  std::set<std::string> got;
  for (const auto& [id, attrs] : p.nodes) got.insert(id);
  CHECK(got == ids);
  CHECK(label_of(p.nodes.at("s0")) == R"(x\n(3, 4))");
  CHECK(label_of(p.nodes.at("s1")) == R"(W \"1\"\n(4, 5))");
  CHECK(label_of(p.nodes.at("n0")) == R"(#0 matmul\nta=N tb=N\n(3, 5))");
  CHECK(label_of(p.nodes.at("n1")) == R"(#1 tanh\n(3, 5))");
  CHECK(label_of(p.nodes.at("n2")) == R"(#2 mul\n(3, 5))");
  CHECK(label_of(p.nodes.at("n3")) == R"(#3 sum\naxis=1 keep_dims=0\n(3))");
  CHECK(label_of(p.nodes.at("c2_1")) == R"(const\n(3, 5))");
  // Variables, intermediates, outputs and constants look different.
  CHECK_THAT(p.nodes.at("s0"), Contains("shape=box"));
  CHECK_THAT(p.nodes.at("n1"), Contains("shape=ellipse"));
  CHECK_THAT(p.nodes.at("n3"), Contains("shape=doubleoctagon"));
  CHECK_THAT(p.nodes.at("c2_1"), Contains("shape=note"));

  const std::set<std::pair<std::string, std::string>> edges{
      {"s0", "n0"}, {"s1", "n0"}, {"n0", "n1"}, {"n1", "n2"}, {"c2_1", "n2"}, {"n2", "n3"}};
  CHECK(p.edges == edges);
  CHECK(p.edge_attrs.at({"s0", "n0"}) == R"(label="0")");
  CHECK(p.edge_attrs.at({"s1", "n0"}) == R"(label="1")");
  CHECK(p.edge_attrs.at({"c2_1", "n2"}) == R"(label="1")");
  CHECK(p.edge_attrs.at({"n0", "n1"}).empty());  // one input: no position label

  amari::DotOptions bare;
  bare.show_constants = false;
  bare.show_shapes = false;
  bare.show_attributes = false;
  bare.left_to_right = true;
  const ParsedDot q = parse_dot(amari::to_dot(tape, bare));
  CHECK(q.nodes.count("c2_1") == 0);
  CHECK(q.edges.size() == 5);
  CHECK(label_of(q.nodes.at("n3")) == "#3 sum");
  CHECK_THAT(amari::to_dot(tape, bare), Contains("rankdir=LR;"));

  if (std::system("command -v dot > /dev/null 2>&1") != 0) {
    WARN("graphviz 'dot' is not installed: the DOT text was not rendered");
    return;
  }
  amari::test::TempDir dir("tape-dot");
  std::ofstream(dir.file("tape.dot")) << dot;
  const std::string cmd =
      "dot -Tsvg " + dir.file("tape.dot") + " -o " + dir.file("tape.svg") + " 2>&1";
  CHECK(std::system(cmd.c_str()) == 0);
}

TEST_CASE("tape observer: jvp reports each record with a tangent once, in recording order",
          "[tape_print]") {
  Graph g;
  make_graph(g);
  Rng rng(11);
  const Tensor<double> vx = normal_tensor<double>(Shape{3, 4}, rng);
  Recorder rec;
  g.tape.set_observer(&rec);
  const TV out = g.tape.jvp(VV{g.in[0]}, TV{vx}, VV{g.recs[4]});
  g.tape.set_observer(nullptr);

  CHECK(rec.begun == std::vector<SweepKind>{SweepKind::forward});
  CHECK(rec.ended == std::vector<SweepKind>{SweepKind::forward});
  // Only x is seeded: exp(w) (#2) and sum(e) (#5) have no tangent and are skipped; square(x) (#6)
  // is computed although the requested output does not read it.
  CHECK(rec.order(SweepKind::forward) == std::vector<std::size_t>{0, 1, 3, 4, 6});
  for (const auto& e : rec.events) {
    const std::size_t k = e.node.index;
    INFO("record " << k);
    CHECK(e.node.output == 2 + static_cast<std::int32_t>(k));  // slots 0, 1 are the variables
    const Tensor<double> expect = g.tape.jvp(VV{g.in[0]}, TV{vx}, VV{g.recs[k]})[0];
    CHECK(max_abs_diff(e.value, expect) == 0.0);
  }
  CHECK(max_abs_diff(rec.find(SweepKind::forward, 4).value, out[0]) == 0.0);
  CHECK(std::string(rec.find(SweepKind::forward, 0).node.op) == "matmul");
  CHECK(rec.find(SweepKind::forward, 3).node.inputs ==
        std::array<std::int32_t, 3>{3, -1, -1});  // t, const
  CHECK(rec.find(SweepKind::forward, 3).node.arity == 2);
}

TEST_CASE("tape observer: vjp reports each record on a path once, in reverse order",
          "[tape_print]") {
  Graph g;
  make_graph(g);
  Recorder rec;
  g.tape.set_observer(&rec);
  const TV gx = g.tape.vjp(VV{g.recs[4]}, TV{one()}, VV{g.in[0]});
  g.tape.set_observer(nullptr);  // the oracle sweeps below are not recorded
  // #6 (square) gets no cotangent from s, #2 and #5 lead to no requested input: skipped.
  CHECK(rec.order(SweepKind::reverse) == std::vector<std::size_t>{4, 3, 1, 0});
  for (const auto& e : rec.events) {
    INFO("record " << e.node.index);
    CHECK(!e.value_tangent.defined());
    const Tensor<double> expect = g.tape.vjp(VV{g.recs[4]}, TV{one()}, VV{g.recs[e.node.index]})[0];
    CHECK(max_abs_diff(e.value, expect) == 0.0);
  }
  // The adjoint record #0 consumed, pulled back through its matmul, is the gradient.
  const Tensor<double>& h_bar = rec.find(SweepKind::reverse, 0).value;
  CHECK(max_abs_diff(g.tape.vjp(VV{g.recs[0]}, TV{h_bar}, VV{g.in[0]})[0], gx[0]) < 1e-14);

  // Two outputs, both inputs: every record on a path from an output to an input, once.
  rec = Recorder{};
  g.tape.set_observer(&rec);
  const Tensor<double> u = Tensor<double>::scalar(0.5);
  const TV g2 = g.tape.vjp(VV{g.recs[4], g.recs[5]}, TV{one(), u}, VV{g.in[0], g.in[1]});
  CHECK(rec.begun == std::vector<SweepKind>{SweepKind::reverse});
  CHECK(rec.ended == std::vector<SweepKind>{SweepKind::reverse});
  CHECK(rec.order(SweepKind::reverse) == std::vector<std::size_t>{5, 4, 3, 2, 1, 0});
  CHECK(rec.find(SweepKind::reverse, 5).value.item() == 0.5);
  CHECK(rec.find(SweepKind::reverse, 4).value.item() == 1.0);
  g.tape.set_observer(nullptr);
  const Tensor<double> e_bar = g.tape.vjp(VV{g.recs[5]}, TV{u}, VV{g.recs[2]})[0];
  CHECK(max_abs_diff(rec.find(SweepKind::reverse, 2).value, e_bar) == 0.0);
}

TEST_CASE(
    "tape observer: hvp reports tangents forward, then adjoints and their tangents in reverse",
    "[tape_print]") {
  Graph g;
  make_graph(g);
  Rng rng(13);
  const Tensor<double> vx = normal_tensor<double>(Shape{3, 4}, rng);
  const Tensor<double> vw = normal_tensor<double>(Shape{4, 5}, rng);
  Recorder rec;
  g.tape.set_observer(&rec);
  const TV hv = g.tape.hvp(VV{g.recs[4]}, TV{one()}, g.in, TV{vx, vw});
  g.tape.set_observer(nullptr);

  CHECK(rec.begun == std::vector<SweepKind>{SweepKind::forward, SweepKind::second_order});
  CHECK(rec.ended == rec.begun);
  CHECK(rec.order(SweepKind::forward) == std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6});
  CHECK(rec.order(SweepKind::second_order) == std::vector<std::size_t>{4, 3, 1, 0});
  for (const auto& e : rec.events) {
    const std::size_t k = e.node.index;
    INFO("record " << k);
    if (e.kind == SweepKind::forward) {
      CHECK(max_abs_diff(e.value, g.tape.jvp(g.in, TV{vx, vw}, VV{g.recs[k]})[0]) == 0.0);
      continue;
    }
    CHECK(max_abs_diff(e.value, g.tape.vjp(VV{g.recs[4]}, TV{one()}, VV{g.recs[k]})[0]) < 1e-14);
    // The adjoint's tangent: the derivative of this record's adjoint along (vx, vw), by central
    // differences of adjoints recorded at the shifted points.
    const double h = 1e-5;
    const auto adjoint_at = [&](double t) {
      Tape<double> tape;
      Tensor<double> x = g.x0.clone(), w = g.w0.clone();
      for (amari::Index i = 0; i < x.size(); ++i) x[i] += t * vx[i];
      for (amari::Index i = 0; i < w.size(); ++i) w[i] += t * vw[i];
      VV in;
      const VV r = record_graph(tape, x, w, g.c0, in);
      return tape.vjp(VV{r[4]}, TV{one()}, VV{r[k]})[0];
    };
    const Tensor<double> ap = adjoint_at(h), am = adjoint_at(-h);
    Tensor<double> fd(ap.shape());
    for (amari::Index i = 0; i < fd.size(); ++i) fd[i] = (ap[i] - am[i]) / (2 * h);
    if (e.value_tangent.defined()) {
      CHECK(max_abs_diff(e.value_tangent, fd) < 1e-7);
    } else {
      CHECK(max_abs_diff(fd, Tensor<double>(fd.shape())) < 1e-7);  // null means zero
    }
  }
  // The sum's adjoint (the seed 1) does not move: its tangent is zero, reported as null.
  CHECK(!rec.find(SweepKind::second_order, 4).value_tangent.defined());
  CHECK(rec.find(SweepKind::second_order, 1).value_tangent.defined());
  (void)hv;
}

TEST_CASE("tape observer: with no observer, or after clear(), results are unchanged",
          "[tape_print]") {
  Graph g;
  make_graph(g);
  Rng rng(17);
  const Tensor<double> vx = normal_tensor<double>(Shape{3, 4}, rng);
  const Tensor<double> vw = normal_tensor<double>(Shape{4, 5}, rng);
  CHECK(g.tape.observer() == nullptr);  // the default
  const TV j0 = g.tape.jvp(g.in, TV{vx, vw}, VV{g.recs[4]});
  const TV v0 = g.tape.vjp(VV{g.recs[4]}, TV{one()}, g.in);
  const TV h0 = g.tape.hvp(VV{g.recs[4]}, TV{one()}, g.in, TV{vx, vw});

  std::ostringstream text;
  amari::NormPrinter<double> printer(text);
  g.tape.set_observer(&printer);
  CHECK(g.tape.observer() == &printer);
  const TV j1 = g.tape.jvp(g.in, TV{vx, vw}, VV{g.recs[4]});
  const TV v1 = g.tape.vjp(VV{g.recs[4]}, TV{one()}, g.in);
  const TV h1 = g.tape.hvp(VV{g.recs[4]}, TV{one()}, g.in, TV{vx, vw});
  CHECK(max_abs_diff(j0[0], j1[0]) == 0.0);
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(max_abs_diff(v0[i], v1[i]) == 0.0);
    CHECK(max_abs_diff(h0[i], h1[i]) == 0.0);
  }
  // jvp: 7 records; vjp: 4; hvp: 7 + 4; plus a header per sweep.
  std::size_t lines = 0;
  for (char ch : text.str()) lines += ch == '\n';
  CHECK(lines == 7 + 4 + 11 + 4);
  CHECK_THAT(
      text.str(),
      Contains("forward sweep (tangents, recording order)\n  #0   matmul       s2   (3, 5)"));
  CHECK_THAT(text.str(), Contains("|adjoint tangent| = "));
  CHECK_THAT(text.str(),
             Contains("  #4   sum          s6   ()            |adjoint| = 1.000000e+00  "));

  // clear() keeps the observer; unsetting it silences the sweeps.
  Recorder rec;
  g.tape.set_observer(&rec);
  g.tape.clear();
  CHECK(g.tape.observer() == &rec);
  const Var<double> x = g.tape.variable(g.x0);
  const Var<double> y = amari::sum(amari::tanh(x));
  (void)g.tape.vjp(VV{y}, TV{one()}, VV{x});
  CHECK(rec.order(SweepKind::reverse) == std::vector<std::size_t>{1, 0});
  g.tape.set_observer(nullptr);
  (void)g.tape.vjp(VV{y}, TV{one()}, VV{x});
  CHECK(rec.events.size() == 2);
}

TEST_CASE("tape observer: a refused sweep reports nothing", "[tape_print]") {
  Graph g;
  make_graph(g);
  Recorder rec;
  g.tape.set_observer(&rec);
  CHECK_THROWS_AS(g.tape.vjp(VV{g.recs[4]}, TV{Tensor<double>(Shape{2})}, VV{g.in[0]}),
                  amari::ShapeError);
  CHECK_THROWS_AS(g.tape.jvp(VV{g.recs[0]}, TV{Tensor<double>(Shape{3, 5})}, VV{g.recs[4]}),
                  amari::TapeError);
  CHECK(rec.begun.empty());
  CHECK(rec.events.empty());
}
