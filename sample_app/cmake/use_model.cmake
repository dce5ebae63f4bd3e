# Brings an exported model into a sample host: add_subdirectory() of the package when
# LAPIS_PACKAGE_DIR is set, else find_package(LAPIS_MODEL) from an installed one (put its
# prefix in CMAKE_PREFIX_PATH). Either way the host links ${LAPIS_MODEL}::${LAPIS_MODEL}.
set(LAPIS_PACKAGE_DIR "" CACHE PATH "Package lapis-export wrote (empty: find_package)")
set(LAPIS_MODEL "" CACHE STRING "Name of the exported model (its namespace and target)")
if(NOT LAPIS_MODEL)
  message(FATAL_ERROR "set -DLAPIS_MODEL=<name of the exported model>, and "
    "-DLAPIS_PACKAGE_DIR=<its package> or CMAKE_PREFIX_PATH to where it is installed")
endif()
if(LAPIS_PACKAGE_DIR)
  find_package(Kokkos REQUIRED)
  add_subdirectory(${LAPIS_PACKAGE_DIR} ${LAPIS_MODEL})
else()
  find_package(${LAPIS_MODEL} REQUIRED)
endif()
