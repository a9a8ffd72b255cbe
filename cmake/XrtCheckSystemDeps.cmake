# xrt_check_system_deps(): finds the system libraries the C++ build needs before any target is defined, and stops
# with ONE message naming every missing one and the packages that provide it, rather than failing on the first
# find_package() deep in a subdirectory ("Could not find a package configuration file provided by nlohmann_json").
# The later find_package() calls then find the same results (cached). OpenVINO is not checked here: its plugin is
# optional (XRT_BUILD_OPENVINO=AUTO builds it when found and says so when not).
function(xrt_check_system_deps)
  set(_missing_what "")
  set(_missing_debian "")
  set(_missing_fedora "")
  macro(_xrt_missing what debian fedora)
    list(APPEND _missing_what "${what}")
    list(APPEND _missing_debian "${debian}")
    list(APPEND _missing_fedora "${fedora}")
  endmacro()

  find_package(OpenSSL 3 QUIET COMPONENTS Crypto)
  if(NOT OpenSSL_FOUND)
    _xrt_missing("OpenSSL 3 (libcrypto, SHA-256 and signatures)" libssl-dev openssl-devel)
  endif()
  find_package(nlohmann_json 3.10 QUIET)
  if(NOT nlohmann_json_FOUND)
    _xrt_missing("nlohmann_json >= 3.10 (manifest parsing)" nlohmann-json3-dev json-devel)
  endif()
  find_path(XRT_ZSTD_INCLUDE_DIR zstd.h)
  find_library(XRT_ZSTD_LIBRARY NAMES zstd)
  if(NOT XRT_ZSTD_INCLUDE_DIR OR NOT XRT_ZSTD_LIBRARY)
    _xrt_missing("zstd (compressed sections)" libzstd-dev libzstd-devel)
  endif()
  if(XRT_BUILD_RUNNER)
    find_package(PkgConfig QUIET)
    if(PkgConfig_FOUND)
      pkg_check_modules(_XRT_CHECK_LIBZIP QUIET libzip)  # a prefix of its own: runtime_cpp/tools makes the target
    endif()
    if(NOT _XRT_CHECK_LIBZIP_FOUND)
      find_library(XRT_LIBZIP_LIBRARY NAMES zip)
      find_path(XRT_LIBZIP_INCLUDE_DIR NAMES zip.h)
      if(NOT XRT_LIBZIP_LIBRARY OR NOT XRT_LIBZIP_INCLUDE_DIR)
        _xrt_missing("libzip (xrt-run's .npz files), or -DXRT_BUILD_RUNNER=OFF" "libzip-dev pkg-config"
                     "libzip-devel pkgconf")
      endif()
    endif()
  endif()
  if(XRT_BUILD_TESTS)
    find_package(GTest QUIET)
    if(NOT GTest_FOUND)
      _xrt_missing("GoogleTest (the C++ tests), or -DXRT_BUILD_TESTS=OFF" libgtest-dev gtest-devel)
    endif()
  endif()

  if(_missing_what)
    list(JOIN _missing_what "\n  - " _what)
    list(JOIN _missing_debian " " _debian)
    list(JOIN _missing_fedora " " _fedora)
    message(FATAL_ERROR
      "xpuruntime needs system libraries that are not installed:\n  - ${_what}\n"
      "Install them, then build again:\n"
      "  Debian/Ubuntu: sudo apt-get install ${_debian}\n"
      "  Fedora/RHEL:   sudo dnf install ${_fedora}\n"
      "(or install the prebuilt wheel, which carries them: pip install xpuruntime-*.whl; README, \"Install\")")
  endif()
endfunction()
