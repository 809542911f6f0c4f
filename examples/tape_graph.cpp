// What the tape records for a training loss: a 4-8-3 tanh MLP with a softmax cross-entropy head
// on a batch of 5 examples, recorded as the nn::RecordedModel inside nn::loss_and_gradient records
// it (the parameters are tape variables, the batch and its labels are constants), but on a tape of
// its own with the variables named. Prints the recorded graph in Graphviz DOT to standard output,
// or with --table the table of records. (A RecordedModel's tape() prints the same way, unnamed.)
//
//   tape_graph > mlp.dot && dot -Tsvg mlp.dot > mlp.svg      # the graph
//   tape_graph --table                                        # records, slots, residuals, bytes
//
// In the graph, green boxes are the variables (the parameters, named as in Model::layout()), grey
// notes the constant inputs (the data and labels: constants are never on the tape, so they only
// appear as an input a record read), ellipses the recorded primitives and the orange octagon the
// loss. Only values that depend on a parameter are recorded: that is why the data never shows up
// as a node of its own.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include <amari/amari.hpp>
#include <amari/autodiff/tape_print.hpp>

#include "example_support.hpp"

using namespace amari;

int main(int argc, char** argv) {
  // --table is a flag (no value); the other options go through example::Options.
  bool table = false;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--table") == 0) {
      table = true;
    } else {
      args.push_back(argv[i]);
    }
  }
  const example::Options opt(
      static_cast<int>(args.size()), args.data(),
      {{"batch", "5"}, {"seed", "1"}, {"direction", "TB"}},
      "tape_graph: the tape of an MLP's training loss, as Graphviz DOT on standard output\n"
      "  --table               print the table of records instead of the DOT graph\n"
      "  --direction TB|LR     graph layout: top to bottom or left to right");
  try {
    const Index batch = opt.integer("batch");
    nn::Model<float> model(nn::mlp<float>({4, 8, 3}),
                           static_cast<std::uint64_t>(opt.integer("seed")));
    nn::SoftmaxCrossEntropy<float> head;

    // A tiny batch: inputs (batch, 4) and one-hot labels (batch, 3).
    Tensor<float> x(Shape{batch, 4});
    std::vector<int> labels;
    for (Index i = 0; i < batch; ++i) {
      for (Index j = 0; j < 4; ++j)
        x.at(i, j) = 0.25f * static_cast<float>((i + 1) * (j + 1) % 7) - 0.5f;
      labels.push_back(static_cast<int>(i % 3));
    }
    const Tensor<float> y = nn::one_hot<float>(labels, 3);

    // model.variables(tape) records the same variables without names; naming them after the
    // model's layout ("0.weight", ...) labels the table and the graph.
    Tape<float> tape;
    std::vector<Var<float>> params;
    for (std::size_t i = 0; i < model.parameter_views().size(); ++i)
      params.push_back(tape.variable(model.parameter_views()[i], model.layout()[i].name));
    const Var<float> z = model.forward(Var<float>(x), std::span<const Var<float>>(params));
    const Var<float> loss = head.loss(z, y);

    if (table) {
      std::printf("loss = %.6f\n%s", static_cast<double>(loss.value().item()),
                  to_string(tape).c_str());
    } else {
      DotOptions dot;
      dot.graph_name = "mlp_loss";
      dot.left_to_right = opt.str("direction") == "LR";
      std::fputs(to_dot(tape, dot).c_str(), stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tape_graph: %s\n", e.what());
    return 1;
  }
  return 0;
}
