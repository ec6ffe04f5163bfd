// Shared by the build scripts of every crate whose binaries or tests link libtorch
// (included with `include!`). It fixes the two linking pitfalls of LIBTORCH.md:
//
// 1. No rpath: torch-sys tells the linker where libtorch is but not the loader, so a
//    binary would need LD_LIBRARY_PATH. We bake the folder in as RUNPATH.
// 2. CUDA silently dropped: with `--as-needed`, libtorch_cuda.so is not recorded in
//    NEEDED because no symbol of it is referenced directly; its static initialisers
//    are what register the CUDA backend, so without it `Cuda::is_available()` is false
//    even on a GPU machine. `--no-as-needed` keeps it.
//
// `DEP_TCH_LIBTORCH_LIB` is exported by torch-sys (`links = "tch"`) and is visible only
// to build scripts of crates that depend on torch-sys directly, hence the dependency.
fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB not set: binaries will need LD_LIBRARY_PATH");
        return;
    };
    // Resolve symlinks: `.venv` in a checkout is a link to a shared venv, and the
    // canonical folder stays valid for every clone that shares the build cache.
    let lib = std::fs::canonicalize(&lib).map(|p| p.display().to_string()).unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let has_cuda = std::path::Path::new(&lib).join("libtorch_cuda.so").exists();
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    if has_cuda {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
    println!("cargo:rustc-env=DITBENCH_LIBTORCH_LIB={lib}");
}
