// Turns the Google Benchmark JSON of bench/sweep_bench and bench/gemm_bench into Markdown tables
// and gnuplot data files (bench/sweep draws the figures from them; tests/report checks this step on
// a small saved JSON, without gnuplot).
//
//   bench_report --sweep sweep.json --gemm gemm.json --out DIR
//
// Writes DIR/tables.md and, per sweep axis, DIR/ratios_<axis>.dat (axis value, f in us, the five
// measured ratios JVP, VJP, GGN-vp, linearized GGN-vp, Hessian-vp, then their five GEMM-flop
// limits), and DIR/gemm.dat (n, float GFLOP/s on 1 thread and on all threads) with DIR/gemm_peak.gp
// (the measured one-core FMA peak and the largest thread count as gnuplot variables). Each axis
// holds the points whose other two parameters are those of the reference point (--reference
// WIDTH,DEPTH,BATCH, default 256,2,128). When the JSON holds repetitions with aggregates, the
// medians are used.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "json_reader.hpp"

namespace {

using amari::bench::json::Value;

struct Run {
  std::map<std::string, double> args;   // "width" -> 256, parsed from the name's "key:value" parts
  std::vector<std::string> name_parts;  // the name split at '/'
  const Value* entry = nullptr;

  double counter(const std::string& key) const {
    const Value* v = entry->find(key);
    if (!v || v->kind != Value::Kind::number)
      throw std::runtime_error("bench_report: no counter '" + key + "'");
    return v->number;
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("bench_report: cannot read '" + path + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The runs of a Google Benchmark JSON document: the "median" aggregates if there are aggregates,
// else the plain iterations.
std::vector<Run> runs_of(const Value& doc) {
  const Value* list = doc.find("benchmarks");
  if (!list || list->kind != Value::Kind::array)
    throw std::runtime_error("bench_report: no \"benchmarks\" array");
  auto is_aggregate = [](const Value& b) {
    const Value* t = b.find("run_type");
    return t && t->string == "aggregate";
  };
  const bool aggregates = std::any_of(list->array.begin(), list->array.end(), is_aggregate);
  std::vector<Run> out;
  for (const Value& b : list->array) {
    if (aggregates) {
      const Value* a = b.find("aggregate_name");
      if (!is_aggregate(b) || !a || a->string != "median") continue;
    } else if (is_aggregate(b)) {
      continue;
    }
    const Value* name = b.find("run_name");
    if (!name) name = b.find("name");
    if (!name) throw std::runtime_error("bench_report: a benchmark without a name");
    Run r;
    r.entry = &b;
    std::stringstream parts(name->string);
    for (std::string part; std::getline(parts, part, '/');) {
      r.name_parts.push_back(part);
      const auto colon = part.find(':');
      if (colon != std::string::npos)
        r.args[part.substr(0, colon)] = std::stod(part.substr(colon + 1));
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::string fixed(double x, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

const char* const kProducts[] = {"jvp", "vjp", "ggn", "ggn_linearized", "hvp"};
const char* const kProductNames[] = {"JVP", "VJP", "GGN-vp", "linearized GGN-vp", "Hessian-vp"};

// One sweep axis: the Markdown table (appended to `md`) and ratios_<axis>.dat.
void sweep_axis(const std::vector<Run>& runs, const std::string& axis,
                const std::map<std::string, double>& ref, const std::string& out_dir,
                std::string& md) {
  std::vector<const Run*> rows;
  for (const Run& r : runs) {
    if (r.name_parts.empty() || r.name_parts[0] != "BM_sweep" || !r.args.count(axis)) continue;
    bool on_axis = true;
    for (const auto& [k, v] : ref)
      on_axis = on_axis && (k == axis || (r.args.count(k) && r.args.at(k) == v));
    if (on_axis) rows.push_back(&r);
  }
  std::sort(rows.begin(), rows.end(),
            [&](const Run* a, const Run* b) { return a->args.at(axis) < b->args.at(axis); });
  std::string fixed_params;
  for (const auto& [k, v] : ref)
    if (k != axis) fixed_params += (fixed_params.empty() ? "" : ", ") + k + " " + fixed(v, 0);
  md += "### Cost ratios to f against " + axis + " (" + fixed_params + ")\n\n";
  md += "Measured ratio, and in parentheses the GEMM-flop limit.\n\n| " + axis + " | f (us) |";
  for (const char* n : kProductNames) md += std::string(" ") + n + " |";
  md += "\n|---|---|---|---|---|---|---|\n";
  std::ofstream dat(out_dir + "/ratios_" + axis + ".dat");
  dat << "# " << axis
      << " f_us jvp vjp ggn ggn_linearized hvp jvp_limit vjp_limit ggn_limit ggn_linearized_limit "
         "hvp_limit\n";
  for (const Run* r : rows) {
    md += "| " + fixed(r->args.at(axis), 0) + " | " + fixed(r->counter("f_us"), 1) + " |";
    dat << fixed(r->args.at(axis), 0) << ' ' << fixed(r->counter("f_us"), 2);
    for (const char* p : kProducts) {
      const std::string k = p;
      md += " " + fixed(r->counter(k + "_over_f"), 2) + " (" + fixed(r->counter(k + "_limit"), 2) +
            ") |";
      dat << ' ' << fixed(r->counter(k + "_over_f"), 4);
    }
    for (const char* p : kProducts) dat << ' ' << fixed(r->counter(std::string(p) + "_limit"), 4);
    md += "\n";
    dat << '\n';
  }
  md += "\n";
}

// GEMM: the float square products against the one-core FMA peak. The peak is the one gemm_bench
// measured in-process at first use (best of 20 runs; fraction_of_peak = gflops / (threads * peak)),
// which on a shared machine is steadier than the separate fma_peak benchmark; that one is the
// fallback when no GEMM entry has a fraction_of_peak counter.
void gemm_section(const std::vector<Run>& runs, const std::string& out_dir, std::string& md) {
  double peak = 0, fma_peak = 0;
  std::map<double, std::map<double, double>> gflops;  // n -> threads -> GFLOP/s
  for (const Run& r : runs) {
    if (r.name_parts.size() >= 3 && r.name_parts[0] == "fma_peak" && r.name_parts[1] == "float" &&
        r.name_parts[2] == "native") {
      fma_peak = r.counter("gflops");
    }
    if (r.name_parts.size() >= 2 && r.name_parts[0] == "gemm_square" &&
        r.name_parts[1] == "float" && r.args.count("n") && r.args.count("threads")) {
      const double g = r.counter("gflops"), t = r.args.at("threads");
      gflops[r.args.at("n")][t] = g;
      const Value* fraction = r.entry->find("fraction_of_peak");
      if (fraction && fraction->kind == Value::Kind::number && fraction->number > 0)
        peak = std::max(peak, g / (fraction->number * t));
    }
  }
  if (peak == 0) peak = fma_peak;
  double max_threads = 1;
  for (const auto& [n, by_threads] : gflops)
    for (const auto& [t, g] : by_threads) max_threads = std::max(max_threads, t);
  md += "### GEMM (float, C = A B, n x n)\n\n";
  md += "Measured one-core FMA peak: " + fixed(peak, 1) +
        " GFLOP/s (gemm_bench, in-process, best of 20 runs).\n\n";
  md += "| n | threads | GFLOP/s | fraction of threads x peak |\n|---|---|---|---|\n";
  std::ofstream dat(out_dir + "/gemm.dat");
  dat << "# n gflops_1_thread gflops_" << fixed(max_threads, 0) << "_threads\n";
  for (const auto& [n, by_threads] : gflops) {
    for (const auto& [t, g] : by_threads) {
      md += "| " + fixed(n, 0) + " | " + fixed(t, 0) + " | " + fixed(g, 1) + " | " +
            (peak > 0 ? fixed(g / (peak * t), 2) : std::string("-")) + " |\n";
    }
    const auto one = by_threads.find(1.0), all = by_threads.find(max_threads);
    dat << fixed(n, 0) << ' ' << (one != by_threads.end() ? fixed(one->second, 2) : "NaN") << ' '
        << (all != by_threads.end() ? fixed(all->second, 2) : "NaN") << '\n';
  }
  md += "\n";
  std::ofstream gp(out_dir + "/gemm_peak.gp");
  gp << "peak = " << fixed(peak, 2) << "\nmax_threads = " << fixed(max_threads, 0) << "\n";
}

int usage() {
  std::fprintf(
      stderr,
      "usage: bench_report [--sweep SWEEP.json] [--gemm GEMM.json] --out DIR [--reference W,D,B]\n"
      "  writes DIR/tables.md and the gnuplot data files of bench/sweep\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string sweep, gemm, out;
  std::map<std::string, double> ref{{"width", 256}, {"depth", 2}, {"batch", 128}};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") return usage(), 0;
    if (i + 1 >= argc) return usage();
    const std::string v = argv[++i];
    if (a == "--sweep") {
      sweep = v;
    } else if (a == "--gemm") {
      gemm = v;
    } else if (a == "--out") {
      out = v;
    } else if (a == "--reference") {
      if (std::sscanf(v.c_str(), "%lf,%lf,%lf", &ref["width"], &ref["depth"], &ref["batch"]) != 3)
        return usage();
    } else {
      return usage();
    }
  }
  if (out.empty() || (sweep.empty() && gemm.empty())) return usage();
  try {
    std::string md;
    if (!sweep.empty()) {
      const Value doc = amari::bench::json::parse(read_file(sweep));
      const std::vector<Run> runs = runs_of(doc);
      for (const char* axis : {"width", "depth", "batch"}) sweep_axis(runs, axis, ref, out, md);
    }
    if (!gemm.empty()) {
      const Value doc = amari::bench::json::parse(read_file(gemm));
      gemm_section(runs_of(doc), out, md);
    }
    std::ofstream tables(out + "/tables.md");
    if (!tables) throw std::runtime_error("bench_report: cannot write '" + out + "/tables.md'");
    tables << md;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
