# Passed with -DCMAKE_PROJECT_INCLUDE=... when building sam4dcap_msgs against the ROS 2 PyPI
# wheels (scripts/build_msgs.sh). The wheels' exported CMake targets list their build host's
# Python include dir (/opt/python/...), which does not exist here and which CMake rejects
# ("includes non-existent path"). A real ROS install never sees this file.
function(_sam4dcap_strip_wheel_include_dirs)
  get_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_t IN LISTS _targets)
    get_target_property(_dirs ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(_dirs)
      list(FILTER _dirs EXCLUDE REGEX "^/opt/python/")
      set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_dirs}")
    endif()
  endforeach()
endfunction()
# Deferred: the imported targets only exist after the project's find_package() calls, and the
# check that fails happens at generate time, after the directory has been processed.
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _sam4dcap_strip_wheel_include_dirs)
