# Runs bench_report on the saved JSON of this folder and compares every file it writes with the
# expected copy in expected/. Usage: cmake -DREPORT=<bench_report> -DOUT=<dir> -P compare.cmake
set(here ${CMAKE_CURRENT_LIST_DIR})
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT})
execute_process(COMMAND ${REPORT} --sweep ${here}/sweep_small.json --gemm ${here}/gemm_small.json --out ${OUT}
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "bench_report exited with ${rc}")
endif()
foreach(f tables.md ratios_width.dat ratios_depth.dat ratios_batch.dat gemm.dat gemm_peak.gp)
  execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${OUT}/${f} ${here}/expected/${f} RESULT_VARIABLE differ)
  if(differ)
    file(READ ${OUT}/${f} got)
    message(FATAL_ERROR "bench_report: ${f} differs from tests/report/expected/${f}; got:\n${got}")
  endif()
endforeach()
