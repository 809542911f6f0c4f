# Runs the hidden [.abort] test case under mpirun and requires a non-zero exit status and the
# thrower's message: a rank that throws inside mpi::run_or_abort ends the job instead of hanging
# (the CTest TIMEOUT of this entry turns a hang into a failure).
# Usage: cmake -DMPIEXEC=... -DNP=2 -DTEST_BINARY=... -P expect_abort.cmake
execute_process(COMMAND ${MPIEXEC} --oversubscribe --allow-run-as-root -np ${NP} ${TEST_BINARY} [.abort]
                RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("exit status: ${status}\n${out}\n${err}")
if(status EQUAL 0)
  message(FATAL_ERROR "the job exited with status 0 although a rank threw")
endif()
if(NOT "${out}${err}" MATCHES "deliberate failure in the last rank")
  message(FATAL_ERROR "the thrower's message is missing from the output")
endif()
