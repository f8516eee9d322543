// Denoise raw int16 CT slices with a deployed ctdn model, from C++ without Python.
//
//   denoise_raw MODEL IN.raw OUT.raw HEIGHT WIDTH [DOSE]
//
// MODEL: an AOTInductor package (.pt2, from ctdn.export.to_aoti) or a TensorRT engine (.engine, from
// ctdn-build-engine), with its .json sidecar beside it. IN.raw: n slices of HEIGHT x WIDTH int16 HU,
// row-major, native byte order, back to back (n = file size / (2 HEIGHT WIDTH)). DOSE: the fraction of
// a routine full dose, in (0, 1] (default 0.25). OUT.raw: the denoised slices, same layout.

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "ctdn/runtime.hpp"

int main(int argc, char** argv) {
  if (argc < 6 || argc > 7) {
    std::cerr << "usage: " << argv[0] << " MODEL IN.raw OUT.raw HEIGHT WIDTH [DOSE]\n";
    return 2;
  }
  const std::string model = argv[1], in_path = argv[2], out_path = argv[3];
  const int h = std::atoi(argv[4]), w = std::atoi(argv[5]);
  const float dose = argc > 6 ? std::strtof(argv[6], nullptr) : 0.25f;
  if (h < 1 || w < 1) {
    std::cerr << "HEIGHT and WIDTH must be positive integers\n";
    return 2;
  }
  try {
    std::ifstream in(in_path, std::ios::binary | std::ios::ate);
    if (!in) throw ctdn::Error("cannot read " + in_path);
    const std::streamsize bytes = in.tellg();
    const std::streamsize slice = std::streamsize(h) * w * sizeof(int16_t);
    if (bytes <= 0 || bytes % slice)
      throw ctdn::Error(in_path + ": " + std::to_string(bytes) + " bytes is not a whole number of " +
                        std::to_string(h) + "x" + std::to_string(w) + " int16 slices");
    const int n = int(bytes / slice);
    std::vector<int16_t> hu(size_t(n) * h * w), out(hu.size());
    in.seekg(0);
    in.read(reinterpret_cast<char*>(hu.data()), bytes);

    ctdn::Runtime rt(model);  // checks MODEL.json against this machine first
    const ctdn::Sidecar& sc = rt.sidecar();
    std::cerr << "model " << sc.model_name << " (" << sc.kind << ", " << sc.precision << ", " << sc.device_type
              << "), " << n << " slice(s) of " << h << "x" << w << " at dose " << dose << "\n";

    std::vector<float> doses(n, dose);
    const auto t0 = std::chrono::steady_clock::now();
    rt.denoise(hu.data(), out.data(), n, h, w, doses.data());
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::ofstream o(out_path, std::ios::binary);
    o.write(reinterpret_cast<const char*>(out.data()), bytes);
    if (!o) throw ctdn::Error("cannot write " + out_path);
    std::cerr << "wrote " << out_path << " in " << s << " s (" << 1000 * s / n << " ms per slice)\n";
  } catch (const ctdn::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
