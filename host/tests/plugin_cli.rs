//! `capstan plugin inspect|run` as a user runs them: exit codes, one-line errors, YAML output.

use std::path::PathBuf;
use std::process::Command;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn hello() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), |d| workspace().join(d));
    let dir = std::env::var_os("CAPSTAN_GUEST_DIR")
        .map_or_else(|| target.join("wasm32-wasip2/release"), PathBuf::from);
    let p = dir.join("hello_rust.wasm");
    assert!(
        p.is_file(),
        "{} is missing: run `make guests` first",
        p.display()
    );
    p
}

fn capstan(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .output()
        .expect("runs capstan")
}

#[test]
fn inspect_prints_digest_version_and_describe_as_yaml() {
    let out = capstan(&["plugin".as_ref(), "inspect".as_ref(), hello().as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("digest: sha256:"), "{yaml}");
    assert!(yaml.contains("wit: capstan:reconciler@0.1.0"), "{yaml}");
    assert!(yaml.contains("name: hello"), "{yaml}");
    assert!(yaml.contains("kind: ConfigMap"), "{yaml}");
}

#[test]
fn inspect_of_a_non_component_is_one_line_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("capstan-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("not.wasm");
    std::fs::write(&file, b"\0asm\x01\0\0\0").expect("write");
    let out = capstan(&["plugin".as_ref(), "inspect".as_ref(), file.as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("core WebAssembly module"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_prints_the_outcome_of_one_reconcile() {
    let snap = workspace().join("examples/hello-rust/snapshot.json");
    let out = capstan(&[
        "plugin".as_ref(),
        "run".as_ref(),
        hello().as_os_str(),
        "--snapshot".as_ref(),
        snap.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        yaml.contains("capstan.dev/hello-greeting: hello, web"),
        "{yaml}"
    );
}
