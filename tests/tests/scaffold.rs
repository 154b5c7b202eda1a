//! `capstan plugin new` for each language: scaffold into a temp folder, build, pass the hello vectors.
//!
//! Builds run the scaffold's own documented commands with the real tools:
//! cargo (wasm32-wasip2), componentize-py from PyPI (via the scaffold's
//! build.sh, pip cache helps) and componentize-js from the npm registry (npm
//! ci, npm cache helps). Each takes 30-90 s on the 2-core CI machine.

use anyhow::{Context as _, ensure};
use capstan::scaffold::{Lang, Options, scaffold};
use capstan_tests::conformance::{load_suite, run_suite, test_runtime};
use capstan_tests::target_dir;
use std::path::Path;
use std::process::Command;

fn build(dir: &Path, steps: &[String], lang: Lang) -> anyhow::Result<()> {
    for step in steps {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(step).current_dir(dir);
        if lang == Lang::Rust {
            // Build in the workspace's target folder with `make guests`'
            // release settings, so the dependencies `make guests` compiled
            // (the bindings generator and its wasm-tools above all) are
            // reused rather than compiled again for this one project. The
            // build may wait on the workspace's lock while a build runs.
            cmd.env("CARGO_TARGET_DIR", target_dir())
                .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
                .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
        }
        let out = cmd
            .output()
            .with_context(|| format!("running `{step}` in {}", dir.display()))?;
        ensure!(
            out.status.success(),
            "`{step}` failed in {} ({}):\n{}\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn scaffold_builds_and_passes(lang: Lang) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let name = format!("scaffolded-{lang}");
    let made = scaffold(&Options {
        lang,
        name: name.clone(),
        dir: tmp.path().join(&name),
        sdk_path: None,
    })?;
    if lang == Lang::Rust {
        // Pin the scaffold's dependencies to the workspace's versions, so
        // the test builds what CI already compiled.
        let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
        std::fs::copy(&lock, made.dir.join("Cargo.lock"))?;
    }
    let started = std::time::Instant::now();
    build(&made.dir, &made.build, lang)?;
    eprintln!("{lang}: built in {:.1} s", started.elapsed().as_secs_f64());
    // The Rust build wrote under the CARGO_TARGET_DIR set above.
    let component = match lang {
        Lang::Rust => target_dir().join(made.component.strip_prefix("target")?),
        _ => made.dir.join(&made.component),
    };
    ensure!(
        component.is_file(),
        "{lang}: the build did not produce {}",
        component.display()
    );

    let suite = load_suite("hello")?;
    let failures = run_suite(&test_runtime()?, &suite, &component, &name);
    ensure!(
        failures.is_empty(),
        "{lang} scaffold fails {} checks:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

#[test]
fn scaffolded_rust_plugin_builds_and_passes_the_vectors() -> anyhow::Result<()> {
    scaffold_builds_and_passes(Lang::Rust)
}

#[test]
fn scaffolded_python_plugin_builds_and_passes_the_vectors() -> anyhow::Result<()> {
    scaffold_builds_and_passes(Lang::Python)
}

#[test]
fn scaffolded_js_plugin_builds_and_passes_the_vectors() -> anyhow::Result<()> {
    scaffold_builds_and_passes(Lang::Js)
}
