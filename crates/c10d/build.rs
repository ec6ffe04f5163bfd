// Compiles the C++ bridge to c10d (cxx/) against the headers of the torch that
// torch-sys links, and links the binaries of this crate as the other libtorch crates do.
//
// The Gloo part always builds; it needs gloo's headers, which the torch wheel does not
// ship (Debian: libgloo-dev; only pointers to gloo types cross into libtorch_cpu, which
// exports ProcessGroupGloo). The NCCL part builds only when NCCL's and CUDA's headers
// are found next to torch (the wheels nvidia-nccl-cu13, and cuda-toolkit's `crt` and
// `cccl` extras) and libtorch_cuda exists; it then sets `cfg(ditbench_nccl)`. This is a
// build-time check rather than a Cargo feature because features unify across the
// workspace.
use std::path::{Path, PathBuf};

include!("../../build-support/libtorch_link.rs");

/// The first `nvidia/*/include` folder (the wheels' layout) that holds `header`.
fn wheel_include(site_packages: &Path, header: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(site_packages.join("nvidia"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("include")))
        .collect();
    dirs.sort();
    dirs.into_iter().find(|d| d.join(header).exists())
}

/// Include folders for the NCCL part, or what is missing.
fn nccl_includes(torch: &Path, lib: &Path) -> Result<Vec<PathBuf>, String> {
    if !lib.join("libtorch_cuda.so").exists() {
        return Err(format!("{} has no libtorch_cuda.so (a CPU-only torch)", lib.display()));
    }
    let site_packages = torch.parent().ok_or("torch has no parent folder")?;
    println!("cargo:rerun-if-changed={}", site_packages.join("nvidia").display());
    let mut dirs = Vec::new();
    for (header, from) in [
        ("nccl.h", "nvidia-nccl-cu13"),
        ("cuda_runtime.h", "nvidia-cuda-runtime"),
        ("crt/host_config.h", "nvidia-cuda-crt"),
        ("nv/target", "nvidia-cuda-cccl"),
    ] {
        let dir = wheel_include(site_packages, header)
            .ok_or_else(|| format!("no {header} under {}/nvidia/*/include (wheel {from})", site_packages.display()))?;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    Ok(dirs)
}

fn main() {
    link_libtorch();
    println!("cargo:rerun-if-changed=cxx");
    println!("cargo::rustc-check-cfg=cfg(ditbench_nccl)");
    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect(
        "DEP_TCH_LIBTORCH_LIB is not set: torch-sys did not say where libtorch is (set LIBTORCH_USE_PYTORCH=1 with the venv's python3 first on PATH)",
    ));
    let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
    let torch = lib.parent().expect("libtorch's lib folder has a parent").to_path_buf();

    let gloo = ["/usr/include", "/usr/local/include"].iter().any(|d| Path::new(d).join("gloo/context.h").exists());
    if !gloo {
        panic!("gloo's headers (gloo/context.h) were not found in /usr/include or /usr/local/include: install them with `apt-get install libgloo-dev`; the torch wheel does not ship them");
    }

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .warnings(false)
        // PyTorch wheels since 2.7 are built with the C++11 ABI only.
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        // c10's CUDAEvent.h aligns with hardware_destructive_interference_size, which
        // GCC warns about in every translation unit; its value is fixed on x86-64.
        .flag_if_supported("-Wno-interference-size")
        .file("cxx/bridge.cpp");
    match nccl_includes(&torch, &lib) {
        Ok(dirs) => {
            build.includes(dirs).file("cxx/nccl.cpp");
            println!("cargo:rustc-cfg=ditbench_nccl");
        }
        Err(why) => println!(
            "cargo:warning=building without NCCL (Backend::Nccl will fail at init): {why}; with torch 2.11: \
             pip install \"cuda-toolkit[crt,cccl]==13.0.2\" into the venv"
        ),
    }
    build.compile("ditbench_c10d_bridge");
}
