# ctest driver: install the build tree into a scratch prefix, move the prefix (relocatability), then configure,
# build and run an application that finds it with find_package(xpuruntime).
# Inputs: BUILD_DIR, WORK_DIR, CMAKEDIR (relative), SOURCE_DIR (the consumer), GENERATOR, MAKE_PROGRAM, BUNDLE.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
run("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix")
file(RENAME "${WORK_DIR}/prefix" "${WORK_DIR}/moved")
run("${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${WORK_DIR}/build" -G "${GENERATOR}" "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}"
    "-Dxpuruntime_DIR=${WORK_DIR}/moved/${CMAKEDIR}")
run("${CMAKE_COMMAND}" --build "${WORK_DIR}/build")
run("${WORK_DIR}/build/consumer" "${BUNDLE}")
