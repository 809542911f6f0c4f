#include <amari/autodiff/tape_print.hpp>

#include <cmath>
#include <cstdio>
#include <ostream>
#include <unordered_set>
#include <vector>

namespace amari {
namespace detail {

// Read access to the records for the printers; nothing here modifies a tape.
struct TapeAccess {
  template <Real T>
  static const TapeState<T>& state(const Tape<T>& tape) {
    return *tape.state_;
  }
};

}  // namespace detail

namespace {

// Names of the named variables, indexed by slot (null: unnamed).
template <Real T>
std::vector<const std::string*> slot_names(const detail::TapeState<T>& st) {
  std::vector<const std::string*> names(st.slot_shapes.size(), nullptr);
  for (const auto& [slot, name] : st.names) names[static_cast<std::size_t>(slot)] = &name;
  return names;
}

// The residuals of a record, x0..x(arity-1) then y (collect_saved's contract); entries the record
// did not save are null.
template <Real T>
std::vector<const Tensor<T>*> residuals(const detail::NodeBase<T>& node) {
  std::vector<const Tensor<T>*> saved;
  node.collect_saved(saved);
  saved.resize(static_cast<std::size_t>(node.arity) + 1, nullptr);
  const unsigned mask = node.saved_mask();
  for (std::size_t i = 0; i < saved.size(); ++i) {
    const unsigned bit =
        i < static_cast<std::size_t>(node.arity) ? 1u << i : 8u;  // save::x0 << i, save::y
    if (saved[i] && (!(mask & bit) || !saved[i]->defined())) saved[i] = nullptr;
  }
  return saved;
}

template <Real T>
std::size_t bytes_of(const Tensor<T>& t) {
  return static_cast<std::size_t>(t.size()) * sizeof(T);
}

// Left-aligned columns separated by two spaces; columns listed in `right` are right-aligned.
std::string format_table(const std::vector<std::vector<std::string>>& rows,
                         const std::vector<bool>& right, const std::string& indent) {
  std::vector<std::size_t> width;
  for (const auto& r : rows) {
    if (width.size() < r.size()) width.resize(r.size(), 0);
    for (std::size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  }
  std::string out;
  for (const auto& r : rows) {
    std::string line = indent;
    for (std::size_t c = 0; c < r.size(); ++c) {
      if (c > 0) line += "  ";
      const std::string pad(width[c] - r[c].size(), ' ');
      const bool r_align = c < right.size() && right[c];
      line += r_align ? pad + r[c] : r[c] + pad;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string quoted(const std::string& s) {
  return "\"" + s + "\"";
}

// Escapes a string for a double-quoted DOT label ("\n" sequences are added by the caller).
std::string dot_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

template <Real T>
std::string to_string(const Tape<T>& tape) {
  const auto& st = detail::TapeAccess::state(tape);
  const auto names = slot_names(st);
  std::size_t num_variables = 0;
  for (std::int32_t n : st.slot_node) num_variables += n < 0;

  std::vector<std::vector<std::string>> rows;
  rows.push_back({"#", "op", "inputs", "output", "saved", "bytes"});
  std::unordered_set<const T*> seen;
  std::size_t total_bytes = 0;
  for (std::size_t i = 0; i < st.nodes.size(); ++i) {
    const auto& node = *st.nodes[i];
    const auto saved = residuals(node);
    std::string op = node.name();
    if (const std::string attrs = node.describe(); !attrs.empty()) op += " " + attrs;

    std::string inputs;
    for (int k = 0; k < node.arity; ++k) {
      const std::int32_t s = node.inputs[static_cast<std::size_t>(k)];
      if (k > 0) inputs += ", ";
      if (s < 0) {
        inputs += "const";
        if (const Tensor<T>* c = saved[static_cast<std::size_t>(k)])
          inputs += " " + c->shape().str();
        continue;
      }
      inputs += "s" + std::to_string(s);
      const std::int32_t producer = st.slot_node[static_cast<std::size_t>(s)];
      if (producer >= 0) {
        inputs += " #" + std::to_string(producer);
      } else {
        inputs += " var";
        if (const std::string* name = names[static_cast<std::size_t>(s)])
          inputs += " " + quoted(*name);
      }
    }

    const auto out = static_cast<std::size_t>(node.output);
    const std::string output = "s" + std::to_string(node.output) + " " + st.slot_shapes[out].str();

    std::string kept;
    std::size_t bytes = 0;
    std::unordered_set<const T*> row_seen;
    for (std::size_t k = 0; k < saved.size(); ++k) {
      const Tensor<T>* t = saved[k];
      if (!t) continue;
      if (!kept.empty()) kept += ", ";
      kept += (k + 1 < saved.size() ? "x" + std::to_string(k) : std::string("y")) + " " +
              t->shape().str();
      if (row_seen.insert(t->data()).second) bytes += bytes_of(*t);
      if (seen.insert(t->data()).second) total_bytes += bytes_of(*t);
    }
    if (kept.empty()) kept = "-";
    rows.push_back({std::to_string(i), op, inputs, output, kept, std::to_string(bytes)});
  }

  std::string text = "tape: " + std::to_string(st.nodes.size()) + " records, " +
                     std::to_string(st.slot_shapes.size()) + " slots (" +
                     std::to_string(num_variables) +
                     (num_variables == 1 ? " variable" : " variables") + "), residuals hold " +
                     std::to_string(total_bytes) + " bytes\n";
  if (num_variables > 0) {
    text += "variables:\n";
    std::vector<std::vector<std::string>> vars;
    for (std::size_t s = 0; s < st.slot_node.size(); ++s) {
      if (st.slot_node[s] >= 0) continue;
      vars.push_back({"s" + std::to_string(s), names[s] ? quoted(*names[s]) : std::string("-"),
                      st.slot_shapes[s].str()});
    }
    text += format_table(vars, {}, "  ");
  }
  if (!st.nodes.empty()) text += format_table(rows, {true, false, false, false, false, true}, "");
  return text;
}

template <Real T>
std::string to_dot(const Tape<T>& tape, const DotOptions& options) {
  const auto& st = detail::TapeAccess::state(tape);
  const auto names = slot_names(st);
  // A record's output that no other record reads is an output of the tape.
  std::vector<unsigned char> read(st.slot_shapes.size(), 0);
  for (const auto& node : st.nodes) {
    for (int k = 0; k < node->arity; ++k) {
      const std::int32_t s = node->inputs[static_cast<std::size_t>(k)];
      if (s >= 0) read[static_cast<std::size_t>(s)] = 1;
    }
  }

  std::string dot = "digraph " + quoted(dot_escape(options.graph_name)) + " {\n";
  dot += std::string("  rankdir=") + (options.left_to_right ? "LR" : "TB") + ";\n";
  dot += "  node [fontname=\"Helvetica\", fontsize=10];\n";
  dot += "  edge [fontname=\"Helvetica\", fontsize=8];\n";
  for (std::size_t s = 0; s < st.slot_node.size(); ++s) {
    if (st.slot_node[s] >= 0) continue;
    std::string label = names[s] ? *names[s] : "s" + std::to_string(s);
    if (options.show_shapes) label += "\n" + st.slot_shapes[s].str();
    dot += "  s" + std::to_string(s) +
           " [shape=box, style=\"rounded,filled\", fillcolor=\"#c8e6c9\", label=" +
           quoted(dot_escape(label)) + "];\n";
  }
  for (std::size_t i = 0; i < st.nodes.size(); ++i) {
    const auto& node = *st.nodes[i];
    const auto out = static_cast<std::size_t>(node.output);
    std::string label = "#" + std::to_string(i) + " " + node.name();
    if (options.show_attributes) {
      if (const std::string attrs = node.describe(); !attrs.empty()) label += "\n" + attrs;
    }
    if (options.show_shapes) label += "\n" + st.slot_shapes[out].str();
    const bool is_output = !read[out];
    const std::string id = "n" + std::to_string(i);
    dot += "  " + id +
           (is_output ? " [shape=doubleoctagon, style=filled, fillcolor=\"#ffe0b2\", label="
                      : " [shape=ellipse, style=filled, fillcolor=\"#e3f2fd\", label=") +
           quoted(dot_escape(label)) + "];\n";
    const auto saved = options.show_constants ? residuals(node) : std::vector<const Tensor<T>*>{};
    for (int k = 0; k < node.arity; ++k) {
      const std::int32_t s = node.inputs[static_cast<std::size_t>(k)];
      const std::string edge_label = node.arity > 1 ? " [label=\"" + std::to_string(k) + "\"]" : "";
      if (s >= 0) {
        const std::int32_t producer = st.slot_node[static_cast<std::size_t>(s)];
        const std::string from =
            producer >= 0 ? "n" + std::to_string(producer) : "s" + std::to_string(s);
        dot += "  " + from + " -> " + id + edge_label + ";\n";
      } else if (options.show_constants) {
        const std::string cid = "c" + std::to_string(i) + "_" + std::to_string(k);
        std::string clabel = "const";
        const Tensor<T>* c = saved[static_cast<std::size_t>(k)];
        if (options.show_shapes && c) clabel += "\n" + c->shape().str();
        dot += "  " + cid +
               " [shape=note, style=filled, fillcolor=\"#eeeeee\", fontsize=8, label=" +
               quoted(dot_escape(clabel)) + "];\n";
        dot += "  " + cid + " -> " + id + edge_label + ";\n";
      }
    }
  }
  dot += "}\n";
  return dot;
}

template <Real T>
double l2_norm(const Tensor<T>& t) {
  double s = 0;
  for (Index i = 0; i < t.size(); ++i) s += static_cast<double>(t[i]) * static_cast<double>(t[i]);
  return std::sqrt(s);
}

template <Real T>
void NormPrinter<T>::on_begin(SweepKind kind) {
  kind_ = kind;
  switch (kind) {
    case SweepKind::forward:
      *out_ << "forward sweep (tangents, recording order)\n";
      break;
    case SweepKind::reverse:
      *out_ << "reverse sweep (adjoints, reverse recording order)\n";
      break;
    case SweepKind::second_order:
      *out_
          << "second-order reverse sweep (adjoints and their tangents, reverse recording order)\n";
      break;
  }
}

namespace {

std::string record_prefix(const NodeInfo& node, const Shape& shape) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "  #%-3zu %-12s s%-3d %-14s", node.index, node.op,
                static_cast<int>(node.output), shape.str().c_str());
  return buf;
}

std::string norm_field(const char* what, double v) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "|%s| = %.6e", what, v);
  return buf;
}

}  // namespace

template <Real T>
void NormPrinter<T>::on_forward(const NodeInfo& node, const Tensor<T>& tangent) {
  *out_ << record_prefix(node, tangent.shape()) << norm_field("tangent", l2_norm(tangent)) << "\n";
}

template <Real T>
void NormPrinter<T>::on_reverse(const NodeInfo& node, const Tensor<T>& adjoint,
                                const Tensor<T>* adjoint_tangent) {
  *out_ << record_prefix(node, adjoint.shape()) << norm_field("adjoint", l2_norm(adjoint));
  if (kind_ == SweepKind::second_order)  // a null adjoint tangent is zero
    *out_ << "  "
          << norm_field("adjoint tangent", adjoint_tangent ? l2_norm(*adjoint_tangent) : 0.0);
  *out_ << "\n";
}

template std::string to_string(const Tape<float>&);
template std::string to_string(const Tape<double>&);
template std::string to_dot(const Tape<float>&, const DotOptions&);
template std::string to_dot(const Tape<double>&, const DotOptions&);
template class NormPrinter<float>;
template class NormPrinter<double>;
template double l2_norm(const Tensor<float>&);
template double l2_norm(const Tensor<double>&);

}  // namespace amari
