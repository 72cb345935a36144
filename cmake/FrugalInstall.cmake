# Install the library with an exported package config, so that find_package(frugal) works.
# Everything here is in the install component "frugal" (the library, its headers and package
# files): `cmake --install <build> --component frugal` installs just that, even when other
# installed programs (tools/) are not built.
include(CMakePackageConfigHelpers)
install(TARGETS frugal EXPORT frugalTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT frugal
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT frugal
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT frugal)
install(DIRECTORY include/frugal DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT frugal)
install(EXPORT frugalTargets NAMESPACE frugal::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/frugal COMPONENT frugal)
# {fmt} is linked privately; when it was used header-only (no fmt package), the installed config
# must not look for the package.
if(fmt_FOUND)
  set(FRUGAL_FMT_PACKAGE ON)
else()
  set(FRUGAL_FMT_PACKAGE OFF)
endif()
configure_package_config_file(cmake/frugalConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/frugalConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/frugal)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/frugalConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/frugalConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/frugalConfigVersion.cmake
  ${CMAKE_CURRENT_LIST_DIR}/FrugalFindTorch.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/frugal COMPONENT frugal)
