// Seeing what the tape recorded and what its sweeps compute.
//
// * to_string(tape): a table of the records in recording order: index, primitive and attributes,
//   input slots (variable, recorded intermediate or constant), output slot and shape, the residuals
//   the record keeps (x0/x1/x2 = its inputs, y = its output) and the bytes they hold.
// * to_dot(tape): the recorded graph in Graphviz DOT (render with `dot -Tsvg tape.dot > tape.svg`).
// * NormPrinter: a SweepObserver (autodiff/tape.hpp) printing one line per record and sweep with
//   the L2 norm of the tangent or adjoint, e.g. to watch gradients vanish through a deep network.
//
// What is on a tape: only values that depend on a variable. Variables (Tape::variable) are the
// leaves: the parameters derivatives are taken with respect to. Constants (Vars made from plain
// tensors: data, labels, fixed masks) are never recorded and have no slot; a record that reads one
// has -1 for that input. So "parameters versus data" is "variables versus constants": the tape
// knows a constant only as a missing input (and by its shape when the record saved it).
//
// Cost: these functions walk the records once; they are for inspection, not for hot loops.
#pragma once

#include <iosfwd>
#include <string>

#include <amari/autodiff/tape.hpp>

namespace amari {

/// The records of `tape` as an aligned text table, one row per record in recording order, after
/// a header listing the variables (slot, name if given, shape). Columns:
///   #        record index (recording order)
///   op       primitive name, then its attributes (e.g. "sum axis=1 keep_dims=0")
///   inputs   per input: "s3 #1" (slot 3, output of record 1), "s0 var" or "s0 var \"W1\"" (a
///            variable), or "const" / "const (2, 3)" (not on the tape; shape shown when saved)
///   output   slot and shape of the output
///   saved    residuals kept for the rules: x0, x1, x2 (inputs) and y (output), with shapes
///   bytes    bytes of those residuals (a tensor shared by several records counts in each row;
///            the header total counts it once)
template <Real T>
std::string to_string(const Tape<T>& tape);

/// Options of to_dot.
struct DotOptions {
  /// Draw a small "const" node for each constant input of a record (data, labels): constants are
  /// not on the tape, so each such input gets its own node.
  bool show_constants = true;
  /// Add shapes to the labels of values and records.
  bool show_shapes = true;
  /// Add attributes (axis=1, ...) to record labels.
  bool show_attributes = true;
  /// Lay the graph out left to right instead of top to bottom.
  bool left_to_right = false;
  /// Name of the digraph.
  std::string graph_name = "tape";
};

/// The recorded graph in Graphviz DOT. Nodes: "s<k>" for a variable (leaf; green box, labelled by
/// its name if given, else "s<k>", and its shape), "n<i>" for record i (ellipse labelled
/// "#i op attributes" and its output shape; records whose output no other record reads, i.e. the
/// tape's outputs, are orange double octagons), and "c<i>_<j>" for constant input j of record i
/// (small grey "const" note, only with show_constants). Edges go from each input to the record
/// reading it, labelled with the input position when the record has more than one input. A record
/// stands for its output value, so intermediate values have no node of their own.
template <Real T>
std::string to_dot(const Tape<T>& tape, const DotOptions& options = {});

/// A ready-made SweepObserver: a header line per sweep, then one line per reported record with its
/// index, primitive, output slot and shape, and the L2 norm of its output tangent (forward sweep)
/// or output adjoint (reverse sweeps; in hvp also of the adjoint's tangent), e.g.
///   forward sweep (tangents, recording order)
///     #0   tanh         s1   (2, 3)          |tangent| = 1.234567e+00
template <Real T>
class NormPrinter final : public SweepObserver<T> {
 public:
  /// Writes to `out`, which must outlive the printer's use.
  explicit NormPrinter(std::ostream& out) : out_(&out) {}
  /// Prints the sweep's header line.
  void on_begin(SweepKind kind) override;
  /// Prints the record and |tangent|.
  void on_forward(const NodeInfo& node, const Tensor<T>& tangent) override;
  /// Prints the record and |adjoint| (and |adjoint tangent| in hvp; 0 when the sweep passes null).
  void on_reverse(const NodeInfo& node, const Tensor<T>& adjoint,
                  const Tensor<T>* adjoint_tangent) override;

 private:
  std::ostream* out_;
  SweepKind kind_ = SweepKind::forward;
};

/// Euclidean norm of all elements (accumulated in double), for observers.
template <Real T>
double l2_norm(const Tensor<T>& t);

extern template std::string to_string(const Tape<float>&);
extern template std::string to_string(const Tape<double>&);
extern template std::string to_dot(const Tape<float>&, const DotOptions&);
extern template std::string to_dot(const Tape<double>&, const DotOptions&);
extern template class NormPrinter<float>;
extern template class NormPrinter<double>;
extern template double l2_norm(const Tensor<float>&);
extern template double l2_norm(const Tensor<double>&);

}  // namespace amari
