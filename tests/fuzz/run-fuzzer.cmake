# CTest driver for one fuzzer (cmake -P). First replays the reproducers of past bugs in
# REPRO, one process, in name order (some bugs need a sequence). Then copies the seeds
# into a fresh corpus directory in the build tree, so that the seeds in the source tree
# are never written, and runs the fuzzer over it for at most RUNS new inputs or SECONDS
# seconds.
#
#   cmake -DFUZZER=... -DSEEDS=dir -DWORK=dir -DRUNS=n -DSECONDS=n [-DDICT=file]
#         [-DREPRO=dir] -P run-fuzzer.cmake
#
# A crash, leak, timeout or failed invariant leaves the input in WORK (crash-*, leak-*,
# timeout-*, oom-*) and fails the test.

foreach(var FUZZER SEEDS WORK RUNS SECONDS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run-fuzzer.cmake: -D${var}=... is required")
  endif()
endforeach()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/corpus)
file(GLOB seeds ${SEEDS}/*)
file(COPY ${seeds} DESTINATION ${WORK}/corpus)

if(DEFINED REPRO)
  file(GLOB repro ${REPRO}/*) # sorted by name
  if(repro)
    execute_process(COMMAND ${FUZZER} -artifact_prefix=${WORK}/ ${repro}
      WORKING_DIRECTORY ${WORK} RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "${FUZZER} fails on a reproducer of a past bug in ${REPRO} "
        "(${rc}): a regression; see the output above and repro/README.md")
    endif()
  endif()
endif()

set(dict_arg "")
if(DEFINED DICT AND EXISTS "${DICT}")
  set(dict_arg "-dict=${DICT}")
endif()

execute_process(
  COMMAND ${FUZZER} -runs=${RUNS} -max_total_time=${SECONDS} -rss_limit_mb=2048 -timeout=10
    -print_final_stats=1 -artifact_prefix=${WORK}/ ${dict_arg} ${WORK}/corpus
  WORKING_DIRECTORY ${WORK}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  file(GLOB found ${WORK}/crash-* ${WORK}/leak-* ${WORK}/timeout-* ${WORK}/oom-*
    ${WORK}/slow-unit-*)
  message(FATAL_ERROR "${FUZZER} failed (${rc}); failing input: ${found}\n"
    "reproduce with: ${FUZZER} <file>")
endif()
