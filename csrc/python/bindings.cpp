// ctdn._runtime: the pybind11 layer over ctdn/runtime.hpp. numpy arrays in and out (checked, never
// modified), the GIL released while the runtime works, ctdn::Error -> ctdn.errors.EngineError.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "ctdn/hu.hpp"
#include "ctdn/runtime.hpp"

#ifndef CTDN_TORCH_VERSION
#define CTDN_TORCH_VERSION ""  // the torch this module was built against (set by the build)
#endif
#ifndef CTDN_SOURCES_KEY
#define CTDN_SOURCES_KEY ""  // ctdn.runtime.build.sources_key of the sources it was built from
#endif

namespace py = pybind11;

namespace {

// A Python exception of class `cls` from ctdn.errors.
[[noreturn]] void raise(const char* cls, const std::string& msg) {
  py::object type = py::module_::import("ctdn.errors").attr(cls);
  PyErr_SetString(type.ptr(), msg.c_str());
  throw py::error_already_set();
}

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

void need_contiguous(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style))
    raise("InputError", std::string(name) + " must be C-contiguous (pass np.ascontiguousarray(" + name + "))");
}

int as_int(py::ssize_t v, const char* what) {
  if (v > (1 << 30)) raise("InputError", std::string(what) + " is too large: " + std::to_string(v));
  return static_cast<int>(v);
}

// One float32 dose per slice from a number or a sequence/array of n numbers.
std::vector<float> doses(const py::object& dose, py::ssize_t n) {
  py::array_t<float, py::array::c_style | py::array::forcecast> d;
  try {
    d = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(dose);
  } catch (const py::error_already_set&) {
    d = {};
  }
  if (!d || d.ndim() > 1)
    raise("DoseError", "dose must be a number or one number per slice (" + std::to_string(n) + ")");
  if (d.size() != 1 && d.size() != n)
    raise("DoseError", "dose must be one value or one per slice (" + std::to_string(n) + "), got " +
                           std::to_string(d.size()));
  std::vector<float> out(static_cast<size_t>(n));
  for (py::ssize_t i = 0; i < n; ++i) {
    float v = d.data()[d.size() == 1 ? 0 : i];
    if (!(v > 0.f && v <= 1.f))
      raise("DoseError", "dose is the fraction of a routine full dose, in (0, 1]; got " + std::to_string(v) +
                             " for slice " + std::to_string(i));
    out[static_cast<size_t>(i)] = v;
  }
  return out;
}

struct PyRuntime {
  std::unique_ptr<ctdn::Runtime> rt;
  std::string path;
  py::object sidecar;

  py::array infer(const py::array& x, const py::object& dose) {
    if (x.dtype().kind() != 'f' || x.itemsize() != 4)
      raise("InputTypeError", "x must be a float32 array (the network's unit space), got " +
                                  std::string(py::str(x.dtype())));
    if (x.ndim() != 4 || x.shape(1) != 1)
      raise("InputError", "x must have shape (N, 1, H, W), got " + shape_of(x));
    need_contiguous(x, "x");
    int n = as_int(x.shape(0), "N"), h = as_int(x.shape(2), "H"), w = as_int(x.shape(3), "W");
    if (n == 0) return py::array_t<float>(std::vector<py::ssize_t>{0, 1, h, w});
    auto d = doses(dose, n);
    py::array_t<float> y({x.shape(0), x.shape(1), x.shape(2), x.shape(3)});
    const float* xp = static_cast<const float*>(x.data());
    float* yp = y.mutable_data();
    {
      py::gil_scoped_release nogil;
      rt->infer(xp, d.data(), yp, n, h, w);
    }
    return y;
  }

  py::array denoise(const py::array& hu, const py::object& dose) {
    const bool i16 = hu.dtype().kind() == 'i' && hu.itemsize() == 2;
    const bool f32 = hu.dtype().kind() == 'f' && hu.itemsize() == 4;
    if (!i16 && !f32)
      raise("InputTypeError", "hu must be an int16 or float32 array in HU, got " + std::string(py::str(hu.dtype())));
    if (hu.ndim() != 2 && hu.ndim() != 3)
      raise("InputError", "hu must have shape (N, H, W) or (H, W), got " + shape_of(hu));
    need_contiguous(hu, "hu");
    const bool single = hu.ndim() == 2;
    int n = single ? 1 : as_int(hu.shape(0), "N");
    int h = as_int(hu.shape(single ? 0 : 1), "H"), w = as_int(hu.shape(single ? 1 : 2), "W");
    if (hu.size() == 0) raise("InputError", "hu is empty (shape " + shape_of(hu) + ")");
    auto d = doses(dose, n);
    std::vector<py::ssize_t> shape(hu.shape(), hu.shape() + hu.ndim());
    py::array out(hu.dtype(), shape);
    const void* in = hu.data();
    void* o = out.mutable_data();
    {
      py::gil_scoped_release nogil;
      if (i16)
        rt->denoise(static_cast<const int16_t*>(in), static_cast<int16_t*>(o), n, h, w, d.data());
      else
        rt->denoise(static_cast<const float*>(in), static_cast<float*>(o), n, h, w, d.data());
    }
    return out;
  }
};

// The CPU HU pre-processing on its own: (N, H, W) int16/float32 HU -> (N, 1, Hp, Wp) float32 unit, the
// slice at (margin, margin) and Hp, Wp the multiples of `multiple` from H, W + 2 margin.
py::array hu_pre(const py::array& hu, float lo, float hi, int multiple, int margin) {
  const bool i16 = hu.dtype().kind() == 'i' && hu.itemsize() == 2;
  if (!i16 && !(hu.dtype().kind() == 'f' && hu.itemsize() == 4))
    raise("InputTypeError", "hu must be int16 or float32, got " + std::string(py::str(hu.dtype())));
  if (hu.ndim() != 3 || hu.size() == 0) raise("InputError", "hu must have shape (N, H, W), got " + shape_of(hu));
  need_contiguous(hu, "hu");
  if (multiple < 1) raise("InputError", "multiple must be >= 1");
  if (margin < 0 || margin > 4096) raise("InputError", "margin must be in 0..4096, got " + std::to_string(margin));
  int n = as_int(hu.shape(0), "N"), h = as_int(hu.shape(1), "H"), w = as_int(hu.shape(2), "W");
  int hp = ctdn::hu::padded_size(h + 2 * margin, multiple), wp = ctdn::hu::padded_size(w + 2 * margin, multiple);
  py::array_t<float> x({n, 1, hp, wp});
  float* xp = x.mutable_data();
  const void* in = hu.data();
  {
    py::gil_scoped_release nogil;
    if (i16)
      ctdn::hu::pre(static_cast<const int16_t*>(in), xp, n, h, w, hp, wp, margin, lo, hi);
    else
      ctdn::hu::pre(static_cast<const float*>(in), xp, n, h, w, hp, wp, margin, lo, hi);
  }
  return x;
}

// The CPU HU post-processing on its own: network output y (N, 1, Hp, Wp), the slice at (margin, margin),
// and the input hu (N, H, W) -> HU (N, H, W) in hu's dtype.
py::array hu_post(const py::array& y, const py::array& hu, float lo, float hi, int margin) {
  const bool i16 = hu.dtype().kind() == 'i' && hu.itemsize() == 2;
  if (!i16 && !(hu.dtype().kind() == 'f' && hu.itemsize() == 4))
    raise("InputTypeError", "hu must be int16 or float32, got " + std::string(py::str(hu.dtype())));
  if (y.dtype().kind() != 'f' || y.itemsize() != 4)
    raise("InputTypeError", "y must be float32, got " + std::string(py::str(y.dtype())));
  if (hu.ndim() != 3 || hu.size() == 0) raise("InputError", "hu must have shape (N, H, W), got " + shape_of(hu));
  if (margin < 0 || margin > 4096) raise("InputError", "margin must be in 0..4096, got " + std::to_string(margin));
  if (y.ndim() != 4 || y.shape(0) != hu.shape(0) || y.shape(1) != 1 || y.shape(2) < hu.shape(1) + margin ||
      y.shape(3) < hu.shape(2) + margin)
    raise("InputError", "y must have shape (N, 1, Hp >= H + margin, Wp >= W + margin) for hu " + shape_of(hu) +
                            " and margin " + std::to_string(margin) + ", got " + shape_of(y));
  need_contiguous(hu, "hu");
  need_contiguous(y, "y");
  int n = as_int(hu.shape(0), "N"), h = as_int(hu.shape(1), "H"), w = as_int(hu.shape(2), "W");
  int hp = as_int(y.shape(2), "Hp"), wp = as_int(y.shape(3), "Wp");
  py::array out(hu.dtype(), std::vector<py::ssize_t>{n, h, w});
  void* o = out.mutable_data();
  const void* in = hu.data();
  const float* yp = static_cast<const float*>(y.data());
  {
    py::gil_scoped_release nogil;
    if (i16)
      ctdn::hu::post(yp, static_cast<const int16_t*>(in), static_cast<int16_t*>(o), n, h, w, hp, wp, margin, lo,
                     hi);
    else
      ctdn::hu::post(yp, static_cast<const float*>(in), static_cast<float*>(o), n, h, w, hp, wp, margin, lo, hi);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_runtime, m) {
  m.doc() = "ctdn's C++ runtime (csrc/): deployed models (AOTInductor packages, TensorRT engines) from numpy";

  // ctdn::ModelError -> ctdn.errors.ModelError, any other ctdn::Error -> ctdn.errors.EngineError (imported
  // when raised, so importing ctdn._runtime stays cheap).
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ctdn::ModelError& e) {
      py::object cls = py::module_::import("ctdn.errors").attr("ModelError");
      PyErr_SetString(cls.ptr(), e.what());
    } catch (const ctdn::Error& e) {
      py::object cls = py::module_::import("ctdn.errors").attr("EngineError");
      PyErr_SetString(cls.ptr(), e.what());
    }
  });

  py::class_<PyRuntime>(m, "Runtime", py::module_local(),
                        "Runtime(path, device=0, max_batch=0, cuda_graphs=True, check=True): a deployed model "
                        "opened after checking <path>.json (EngineError on a mismatch).")
      .def(py::init([](const std::string& path, int device, int max_batch, bool cuda_graphs, bool check) {
             ctdn::Options o;
             o.device = device;
             o.max_batch = max_batch;
             o.cuda_graphs = cuda_graphs;
             o.check = check;
             auto self = std::make_unique<PyRuntime>();
             self->path = path;
             {
               py::gil_scoped_release nogil;  // loading a package can take a while
               self->rt = std::make_unique<ctdn::Runtime>(path, o);
             }
             // The sidecar as Python sees it (json.load of the file the runtime has just checked).
             py::object json = py::module_::import("json");
             py::object io = py::module_::import("io");
             py::object f = io.attr("open")(self->rt->sidecar().path, "r", py::arg("encoding") = "utf-8");
             try {
               self->sidecar = json.attr("load")(f);
             } catch (...) {
               f.attr("close")();
               throw;
             }
             f.attr("close")();
             return self;
           }),
           py::arg("path"), py::arg("device") = 0, py::arg("max_batch") = 0, py::arg("cuda_graphs") = true,
           py::arg("check") = true)
      .def_readonly("path", &PyRuntime::path)
      .def_readonly("sidecar", &PyRuntime::sidecar, "the sidecar's JSON as a dict")
      .def_property_readonly("multiple", [](const PyRuntime& r) { return r.rt->sidecar().multiple; })
      .def_property_readonly("hu_window", [](const PyRuntime& r) {
        return py::make_tuple(r.rt->sidecar().hu_lo, r.rt->sidecar().hu_hi);
      })
      .def("infer", &PyRuntime::infer, py::arg("x"), py::arg("dose"),
           "The network: x float32 (N, 1, H, W) in [-1, 1], H and W multiples of .multiple; dose (N,) or "
           "one number; returns y like x.")
      .def("denoise", &PyRuntime::denoise, py::arg("hu"), py::arg("dose"),
           "HU in, HU out: int16 or float32 (N, H, W) or (H, W), any size; dose (N,) or one number; "
           "returns the same dtype and shape.")
      .def("__repr__", [](const PyRuntime& r) {
        const auto& sc = r.rt->sidecar();
        return "<ctdn._runtime.Runtime " + sc.kind + " " + sc.model_name + " on " + sc.device_type + ": " +
               r.path + ">";
      });

  m.def("hu_pre", &hu_pre, py::arg("hu"), py::arg("lo"), py::arg("hi"), py::arg("multiple"),
        py::arg("margin") = 0,
        "The runtime's CPU pre-processing: (N, H, W) int16/float32 HU -> (N, 1, Hp, Wp) float32 unit space: "
        "margin > 0 is ctdn.inference.pad_for_network (margin edge pixels on every side, then to the "
        "multiple); margin 0 is pad_to_multiple (bottom/right, reflect, or replicate when too small)");
  m.def("hu_post", &hu_post, py::arg("y"), py::arg("hu"), py::arg("lo"), py::arg("hi"), py::arg("margin") = 0,
        "The runtime's CPU post-processing: network output y (N, 1, Hp, Wp), the slice at (margin, margin), "
        "+ input hu (N, H, W) -> HU in hu's dtype (ctdn.inference.blend: cropped, pass-through outside the "
        "window, padding and seam weight 1 copied from the input, int16 rounded half to even and "
        "saturated)");
  m.def("build_features", &ctdn::build_features, "what this build contains, e.g. ['aoti', 'cuda', 'tensorrt']");
  m.attr("torch_version") = CTDN_TORCH_VERSION;
  m.attr("sources_key") = CTDN_SOURCES_KEY;
}
