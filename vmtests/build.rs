//! Generates the uAPI bindings from include/uapi/drm/svm_accel.h with bindgen, so the test
//! program uses the header the kernel module is built from, not a hand copy.

use std::path::PathBuf;

fn main() {
    let hdr = "../include/uapi/drm/svm_accel.h";
    println!("cargo:rerun-if-changed={hdr}");
    println!("cargo:rerun-if-changed=include/drm.h");
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");
    if std::env::var_os("LIBCLANG_PATH").is_none() {
        // Debian's libclang-19-dev; clang-sys loads libclang at run time from here.
        std::env::set_var("LIBCLANG_PATH", "/usr/lib/llvm-19/lib");
    }
    let b = bindgen::Builder::default()
        .header(hdr)
        .clang_arg("-Iinclude")
        .allowlist_item("(drm_svm_accel|DRM_IOCTL_SVM_ACCEL|DRM_SVM_ACCEL|SVM_ACCEL).*")
        .derive_default(true)
        // Evaluates the function-like DRM_IOWR() in DRM_IOCTL_SVM_ACCEL_* with clang.
        .clang_macro_fallback()
        .generate()
        .expect("bindgen failed on include/uapi/drm/svm_accel.h");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("uapi.rs");
    b.write_to_file(out).expect("writing bindings");
}
