//! Link settings torch-sys's own build script cannot give our binaries.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    // torch-sys (links = "tch") publishes the libtorch library folder it linked against.
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    // An rpath so the binary and the tests run without LD_LIBRARY_PATH. Modern linkers
    // write RUNPATH, so LD_LIBRARY_PATH can still point elsewhere (e.g. a GPU box).
    println!("cargo:rustc-env=TROJANSCOPE_LIBTORCH_VERSION={}", libtorch_version(Path::new(&lib)));
    println!("cargo:rustc-link-search=native={lib}");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // libtorch_cuda is deliberately not linked: loading it and the CUDA libraries
    // it needs costs every process a fifth of a second and 350 MB resident, so
    // `engine::device::load_cuda_support` opens it at start-up only when the
    // device asked for may be a GPU (found through this rpath or LD_LIBRARY_PATH).
}

/// The version of the libtorch we link: the wheel's `torch/version.py`, or a
/// standalone libtorch's `build-version`.
fn libtorch_version(lib: &Path) -> String {
    let parent = lib.parent().unwrap_or(lib);
    if let Ok(text) = std::fs::read_to_string(parent.join("version.py")) {
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("__version__ = ") {
                return v.trim_matches(['\'', '"']).to_string();
            }
        }
    }
    std::fs::read_to_string(parent.join("build-version"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
