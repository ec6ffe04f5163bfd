include!("../../build-support/libtorch_link.rs");

/// Compiles `src/bridge.cpp` against the headers of the libtorch that torch-sys links.
///
/// torch-sys exports its library folder (`DEP_TCH_LIBTORCH_LIB`, `$TORCH/lib`); the headers
/// sit beside it in `$TORCH/include`, the same two folders torch-sys itself compiles with
/// (what `torch.utils.cpp_extension.include_paths()` returns for the wheel's torch, and
/// the layout of a libtorch archive). Taking them from torch-sys rather than asking Python
/// again guarantees that the headers match the library the binary links.
fn main() {
    link_libtorch();
    println!("cargo:rerun-if-changed=src/bridge.cpp");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("DEP_TCH_LIBTORCH_LIB is exported by torch-sys, a direct dependency");
    let torch = std::path::Path::new(&lib).join("..");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        // The torch 2.11 wheel is built with the C++11 libstdc++ ABI
        // (torch._C._GLIBCXX_USE_CXX11_ABI is True); a mismatch fails to link std::string.
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        // libtorch's headers are noisy under -Wall (unused parameters, deprecations).
        .warnings(false)
        .file("src/bridge.cpp")
        .compile("ditbench_torchext");
    // The bridge's own references into libtorch; torch-sys links these libraries too,
    // but naming them here puts them after the static bridge on the link line.
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
