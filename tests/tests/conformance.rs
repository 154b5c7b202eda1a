//! Every built hello component (Rust, Python, JS) against every hello vector, through the real runtime.
//!
//! The components are listed in `tests/vectors/hello/components.txt` and built
//! by `make components`; a listed component that is missing fails the test.
//! Adding a language means adding its build and a line to that list.

use capstan_tests::conformance::{components_dir, load_suite, run_suite, test_runtime};

#[test]
fn every_hello_component_passes_every_hello_vector() -> anyhow::Result<()> {
    let suite = load_suite("hello")?;
    let runtime = test_runtime()?;
    let dir = components_dir();
    let mut failures = Vec::new();
    for name in &suite.components {
        let path = dir.join(format!("{name}.wasm"));
        if !path.is_file() {
            failures.push(format!(
                "{}: missing; build it with `make components`",
                path.display()
            ));
            continue;
        }
        let started = std::time::Instant::now();
        let found = run_suite(&runtime, &suite, &path, "hello");
        eprintln!(
            "{name}: {} vectors, {} failures, {:.1} s (load included)",
            suite.vectors.len(),
            found.len(),
            started.elapsed().as_secs_f64()
        );
        failures.extend(found);
    }
    assert!(
        failures.is_empty(),
        "{} conformance failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}
