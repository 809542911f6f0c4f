# Fails unless every ```cpp block of a tutorial chapter appears verbatim in the chapter's program,
# so the code a chapter shows is code the test suite compiles and runs. The program's lines may be
# indented more than the quote (a block quoted from inside a function).
# Usage: cmake -DCHAPTER=<NN_name.md> -DPROGRAM=<NN_name.cpp> -P check_quotes.cmake
file(READ ${CHAPTER} md)
file(READ ${PROGRAM} cpp)
# CMake lists split at ';' and treat '[' ']' specially: hide them first.
foreach(text md cpp)
  string(REPLACE ";" "<semicolon>" ${text} "${${text}}")
  string(REPLACE "[" "<open>" ${text} "${${text}}")
  string(REPLACE "]" "<close>" ${text} "${${text}}")
endforeach()
# The program with every line's leading blanks removed, so indentation does not matter.
string(REGEX REPLACE "\n[ \t]+" "\n" cpp_flat "\n${cpp}")
string(REGEX MATCHALL "```cpp\n[^`]*```" blocks "${md}")
list(LENGTH blocks count)
if(count EQUAL 0)
  message(FATAL_ERROR "${CHAPTER}: no ```cpp block")
endif()
foreach(block IN LISTS blocks)
  string(REGEX REPLACE "^```cpp\n" "" code "${block}")
  string(REGEX REPLACE "```$" "" code "${code}")
  string(REGEX REPLACE "\n[ \t]+" "\n" code_flat "\n${code}")
  string(FIND "${cpp_flat}" "${code_flat}" at)
  if(at EQUAL -1)
    string(REPLACE "<semicolon>" ";" code "${code}")
    string(REPLACE "<open>" "[" code "${code}")
    string(REPLACE "<close>" "]" code "${code}")
    message(FATAL_ERROR "${CHAPTER}: this block is not in ${PROGRAM}:\n${code}")
  endif()
endforeach()
message(STATUS "${CHAPTER}: ${count} code blocks, all in ${PROGRAM}")
