# bench_report (bench/report/bench_report.cpp): Google Benchmark JSON -> Markdown tables and gnuplot
# data files. Included from bench/ (bench/sweep builds it) and from tests/ (tests/report checks it);
# defined once.
if(NOT TARGET bench_report)
  add_executable(bench_report ${CMAKE_CURRENT_LIST_DIR}/bench_report.cpp)
  target_link_libraries(bench_report PRIVATE amari_flags)
  # Always <build>/bench/bench_report, whichever folder defined it first.
  set_target_properties(bench_report PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
endif()
