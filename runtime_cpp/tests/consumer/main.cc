// Opens a bundle through the installed headers and library; prints what it sees. Exit 0 on success.
#include <xrt/xrt.hpp>

#include <cstring>
#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: consumer BUNDLE\n";
    return 2;
  }
  try {
    if (std::strcmp(xrt_version(), XRT_EXPECTED_VERSION) != 0) return 1;
    xrt::Bundle bundle = xrt::Bundle::OpenFile(argv[1]);
    auto [major, minor] = bundle.format_version();
    std::cout << "format " << major << "." << minor << ", manifest " << bundle.manifest().size() << " bytes\n";
    for (const auto& name : xrt::ListBackends()) std::cout << "backend " << name << "\n";
    return major == 1 && !bundle.manifest().empty() ? 0 : 1;
  } catch (const xrt::Error& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
