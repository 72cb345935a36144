# Install the library with an exported package config, so that find_package(frugal) works.
include(CMakePackageConfigHelpers)
install(TARGETS frugal EXPORT frugalTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/frugal DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT frugalTargets NAMESPACE frugal::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/frugal)
configure_package_config_file(cmake/frugalConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/frugalConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/frugal)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/frugalConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/frugalConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/frugalConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/frugal)
