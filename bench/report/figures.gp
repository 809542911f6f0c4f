# The figures of bench/sweep, each as PNG and SVG, from the files bench_report and the awk step of
# bench/sweep write. Usage: gnuplot -e "data='DIR'; out='DIR'; optimizers='adam natural_gradient'" figures.gp

load data.'/gemm_peak.gp'
products = "jvp vjp ggn ggn_linearized hvp"
titles = "JVP VJP GGN-vp linearized-GGN-vp Hessian-vp"
colors = "#1f77b4 #ff7f0e #2ca02c #d62728 #9467bd"

set grid
set key outside right top
set style data linespoints

do for [format in "png svg"] {
  if (format eq "png") { set terminal pngcairo size 1000,560 font "sans,11" } else { set terminal svg size 1000,560 font "sans,11" dynamic }
  set termoption noenhanced  # names such as natural_gradient are plain text

  # ---- cost ratios against width, depth and batch: measured (points) and GEMM-flop limits (dashed)
  do for [axis in "width depth batch"] {
    set output out.'/ratios_'.axis.'.'.format
    set title 'time / time(f) against '.axis.' (float tanh MLP, 784 inputs, 10 classes)'
    set xlabel axis
    set ylabel 'time / time(f)'
    if (axis eq "depth") { unset logscale x; set xtics 1 } else { set logscale x 2; set xtics autofreq }
    set yrange [0:*]
    plot for [i=1:5] data.'/ratios_'.axis.'.dat' using 1:(column(2 + i)) title word(titles, i) \
           lc rgb word(colors, i) pt 7 lw 2, \
         for [i=1:5] data.'/ratios_'.axis.'.dat' using 1:(column(7 + i)) with lines \
           title word(titles, i).' GEMM limit' lc rgb word(colors, i) dt 2 lw 1.5
  }
  unset logscale x
  set xtics autofreq

  # ---- GEMM GFLOP/s against n, with the measured peak
  set output out.'/gemm.'.format
  set title 'GEMM throughput (float, n x n) against the measured FMA peak'
  set xlabel 'n'
  set ylabel 'GFLOP/s'
  set logscale x 2
  set yrange [0:*]
  plot data.'/gemm.dat' using 1:2 title '1 thread' lc rgb "#1f77b4" pt 7 lw 2, \
       data.'/gemm.dat' using 1:3 title sprintf('%d threads', max_threads) lc rgb "#ff7f0e" pt 7 lw 2, \
       peak with lines title sprintf('one-core FMA peak %.0f', peak) lc rgb "#1f77b4" dt 2, \
       max_threads * peak with lines title sprintf('%d x peak', max_threads) lc rgb "#ff7f0e" dt 2
  unset logscale x

  # ---- training curves of examples/natural_gradient
  set output out.'/training.'.format
  set multiplot layout 2,2 title 'examples/natural_gradient on Fashion-MNIST (784-256-256-10 tanh MLP)'
  set key inside right top
  set yrange [*:*]
  set title 'minibatch loss against training seconds'
  set xlabel 'seconds'
  set ylabel 'loss'
  set logscale y
  plot for [n in optimizers] data.'/steps.'.n.'.dat' using 2:3 with lines title n
  set title 'mean training loss against epochs'
  set xlabel 'epoch'
  set xtics 1
  plot for [n in optimizers] data.'/epochs.'.n.'.dat' using 1:3 title n pt 7
  unset logscale y
  set key inside right bottom
  set title 'test accuracy against training seconds'
  set xlabel 'seconds'
  set ylabel 'test accuracy'
  set xtics autofreq
  plot for [n in optimizers] data.'/epochs.'.n.'.dat' using 2:4 title n pt 7
  set title 'test accuracy against epochs'
  set xlabel 'epoch'
  set xtics 1
  plot for [n in optimizers] data.'/epochs.'.n.'.dat' using 1:4 title n pt 7
  unset multiplot
  set xtics autofreq
  set key outside right top
}
