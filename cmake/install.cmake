# What `cmake --install` puts where (docs/install.md). Every path is relative to the prefix
# chosen at install time (`cmake --install build --prefix DIR`, or CMAKE_INSTALL_PREFIX), so
# one build installs correctly anywhere; the Debian packages (debian/) use the same rules.
#
#   bin/mtls
#   LIBDIR/libmtls.so.0.x.y, libmtls.so.0 (SONAME), libmtls.so, libmtls.a
#   LIBDIR/pkgconfig/mtls.pc             (written at install time for the prefix in use)
#   LIBDIR/cmake/mtls/                   find_package(mtls): mtls::mtls, mtls::mtls_static
#   include/mtls.h
#   share/man/man1, man8                 every docs/man/*.1 and *.8, found at install time
#   MTLS_SYSTEMD_UNITDIR                 every systemd/*.service and *.socket, if any
#   share/bash-completion/completions/mtls
#   share/doc/mtls                       README.md, docs/*.md, docs/examples, examples/*.c
#
# Files other engineers generate (man pages, units, completion) are picked up when they are
# there: directories are read when installing, not when configuring.

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(MTLS_SYSTEMD_UNITDIR "${CMAKE_INSTALL_LIBDIR}/systemd/system" CACHE STRING
  "Where the systemd units go: relative to the prefix, or absolute (Debian 12: /lib/systemd/system)")
if(CMAKE_INSTALL_LIBDIR MATCHES "^lib/" AND MTLS_SYSTEMD_UNITDIR STREQUAL
   "${CMAKE_INSTALL_LIBDIR}/systemd/system")
  # systemd looks in PREFIX/lib/systemd/system, never in a multiarch directory
  set(MTLS_SYSTEMD_UNITDIR "lib/systemd/system" CACHE STRING "" FORCE)
endif()

install(TARGETS mtls-cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES include/mtls.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

if(TARGET mtls_shared) # not in the fuzz build
  set(mtls_cmakedir ${CMAKE_INSTALL_LIBDIR}/cmake/mtls)
  install(TARGETS mtls_shared EXPORT mtlsTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(FILES ${MTLS_PUBLIC_ARCHIVE} DESTINATION ${CMAKE_INSTALL_LIBDIR})

  # CMake package: the shared library is an exported target; libmtls.a is made by a custom
  # command (ld -r + objcopy, lib/exports.cmake), which CMake cannot export, so the config
  # file declares mtls::mtls_static itself.
  install(EXPORT mtlsTargets NAMESPACE mtls:: FILE mtlsTargets.cmake
    DESTINATION ${mtls_cmakedir})
  configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/mtlsConfig.cmake.in
    ${PROJECT_BINARY_DIR}/cmake/mtlsConfig.cmake
    INSTALL_DESTINATION ${mtls_cmakedir}
    PATH_VARS CMAKE_INSTALL_LIBDIR CMAKE_INSTALL_INCLUDEDIR)
  # the SONAME changes with the major version, and so may the API
  write_basic_package_version_file(${PROJECT_BINARY_DIR}/cmake/mtlsConfigVersion.cmake
    VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
  install(FILES ${PROJECT_BINARY_DIR}/cmake/mtlsConfig.cmake
    ${PROJECT_BINARY_DIR}/cmake/mtlsConfigVersion.cmake DESTINATION ${mtls_cmakedir})

  # pkg-config: written at install time, when the prefix of `cmake --install --prefix` is
  # known (a file made at configure time would name the configure's CMAKE_INSTALL_PREFIX).
  foreach(d LIBDIR INCLUDEDIR)
    if(IS_ABSOLUTE "${CMAKE_INSTALL_${d}}")
      set(mtls_pc_${d} "${CMAKE_INSTALL_${d}}")
    else()
      set(mtls_pc_${d} "\\\${prefix}/${CMAKE_INSTALL_${d}}")
    endif()
  endforeach()
  install(CODE "
    set(MTLS_PC_VERSION \"${PROJECT_VERSION}\")
    set(MTLS_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    set(MTLS_PC_LIBDIR \"${mtls_pc_LIBDIR}\")
    set(MTLS_PC_INCLUDEDIR \"${mtls_pc_INCLUDEDIR}\")
    configure_file(\"${PROJECT_SOURCE_DIR}/cmake/mtls.pc.in\"
      \"${PROJECT_BINARY_DIR}/cmake/mtls.pc\" @ONLY)")
  install(FILES ${PROJECT_BINARY_DIR}/cmake/mtls.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endif()

# man pages: docs/man/ (generated from the option tables); docs/mtls.1 until they land
if(NOT EXISTS ${PROJECT_SOURCE_DIR}/docs/man/mtls.1)
  install(FILES docs/mtls.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 OPTIONAL)
endif()
install(DIRECTORY docs/man/ DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 OPTIONAL
  FILES_MATCHING PATTERN "*.1")
install(DIRECTORY docs/man/ DESTINATION ${CMAKE_INSTALL_MANDIR}/man8 OPTIONAL
  FILES_MATCHING PATTERN "*.8")

# systemd units (templates: installed, never enabled here)
install(DIRECTORY systemd/ DESTINATION ${MTLS_SYSTEMD_UNITDIR} OPTIONAL
  FILES_MATCHING PATTERN "*.service" PATTERN "*.socket" PATTERN "*.timer")

install(DIRECTORY completion/ DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions
  OPTIONAL FILES_MATCHING PATTERN "mtls")

install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR}
  FILES_MATCHING PATTERN "*.md" PATTERN "design" EXCLUDE PATTERN "man" EXCLUDE
  PATTERN "examples" EXCLUDE)
install(DIRECTORY docs/examples/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples OPTIONAL)
install(FILES examples/echo-server.c examples/echo-client.c
  DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
