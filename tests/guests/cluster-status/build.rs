//! Link the component with a 2 MiB initial linear memory.
//!
//! wasm-ld's default is just enough for the 1 MiB stack and the static data,
//! so the first allocations of every reconcile grow memory, and a fresh
//! instance from the pool then shrinks it back (each an `mprotect` and a TLB
//! shootdown on the host). With the heap already in the initial memory
//! (wasi-libc's malloc uses it before growing), a reconcile never grows.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=--initial-memory=2097152");
    }
}
