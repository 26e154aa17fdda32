# The installed forms of libmtls, which export the public API (mtls_*) and nothing else.
#
#   libmtls.so: a version script makes every other symbol local.
#   libmtls.a:  the objects are linked into one relocatable object (ld -r), so the calls
#               between our files are resolved inside it, and then every global that is
#               not mtls_* is made local (objcopy), as a shared library would hide it.
# tests/integration/test_exports.sh checks both with nm.

find_program(MTLS_OBJCOPY NAMES objcopy REQUIRED)
find_program(MTLS_LD NAMES ld REQUIRED)
find_program(MTLS_AR NAMES ar REQUIRED)

add_library(mtls_shared SHARED $<TARGET_OBJECTS:mtls_objs>)
# OpenSSL stays private: mtls.h has no OpenSSL type, and a program linking libmtls.so needs
# no -lssl of its own (the exported mtls::mtls, cmake/install.cmake)
target_link_libraries(mtls_shared PRIVATE OpenSSL::SSL OpenSSL::Crypto Threads::Threads)
# (installed: include/, from install(TARGETS ... INCLUDES DESTINATION))
target_include_directories(mtls_shared PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>)
target_link_options(mtls_shared PRIVATE
  -Wl,--version-script=${PROJECT_SOURCE_DIR}/lib/libmtls.map -Wl,--no-undefined)
set_target_properties(mtls_shared PROPERTIES OUTPUT_NAME mtls EXPORT_NAME mtls
  VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}
  LINK_DEPENDS ${PROJECT_SOURCE_DIR}/lib/libmtls.map)

set(MTLS_PUBLIC_ARCHIVE ${CMAKE_BINARY_DIR}/libmtls.a)
set(mtls_prelinked ${CMAKE_BINARY_DIR}/CMakeFiles/mtls-prelinked.o)
add_custom_command(OUTPUT ${MTLS_PUBLIC_ARCHIVE}
  COMMAND ${MTLS_LD} -r -o ${mtls_prelinked} $<TARGET_OBJECTS:mtls_objs>
  COMMAND ${MTLS_OBJCOPY} --wildcard --keep-global-symbol=mtls_* ${mtls_prelinked}
  COMMAND ${CMAKE_COMMAND} -E rm -f ${MTLS_PUBLIC_ARCHIVE}
  COMMAND ${MTLS_AR} rcs ${MTLS_PUBLIC_ARCHIVE} ${mtls_prelinked}
  DEPENDS mtls_objs $<TARGET_OBJECTS:mtls_objs>
  COMMAND_EXPAND_LISTS
  COMMENT "Archiving libmtls.a with only mtls_* exported")
add_custom_target(mtls_archive ALL DEPENDS ${MTLS_PUBLIC_ARCHIVE})

add_library(mtls_public STATIC IMPORTED GLOBAL)
set_target_properties(mtls_public PROPERTIES IMPORTED_LOCATION ${MTLS_PUBLIC_ARCHIVE}
  INTERFACE_INCLUDE_DIRECTORIES ${PROJECT_SOURCE_DIR}/include
  INTERFACE_LINK_LIBRARIES "OpenSSL::SSL;OpenSSL::Crypto;Threads::Threads")
add_dependencies(mtls_public mtls_archive)
