//! Differential tests: the scripted request sequence against the real kube-apiserver and
//! against capstan-apiserver, compared after normalisation; every remaining difference must be
//! listed (with its reason) in [`KNOWN`] and in docs/apiserver.md.

use anyhow::{Result, bail};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::script;
use capstan_tests::server::TestServer;
use capstan_tests::transcript::{Difference, Recorder, Transcript, diff};
use tokio::sync::OnceCell;

/// A difference the in-memory server keeps on purpose or has not removed yet: a pattern for
/// the step's name and one for the JSON pointer (or `status`), and why. `*` in a pattern
/// matches any run of characters; a path pattern also matches everything below it.
/// docs/apiserver.md lists the same entries.
struct Known {
    step: &'static str,
    path: &'static str,
    /// When set, only this (kube-apiserver, capstan-apiserver) pair of values, as
    /// [`Difference`] shows them (`-` for absent), is expected.
    values: Option<(&'static str, &'static str)>,
    reason: &'static str,
}

// None at present: every response of the script agrees with kube-apiserver's after
// normalisation. A new entry needs its row in docs/apiserver.md too.
const KNOWN: &[Known] = &[];

/// The script's transcript on a fresh real control plane (strict: every status must be the
/// one the Kubernetes API defines for the step), recorded once per test process.
async fn real_transcript() -> Result<Option<Transcript>> {
    static REAL: OnceCell<Result<Option<Transcript>, String>> = OnceCell::const_new();
    let recorded = REAL
        .get_or_init(|| async {
            let record = async {
                let Some(cp) = ControlPlane::start().await? else {
                    return Ok(None);
                };
                let rec = script::run(Recorder::new(cp.client().await?), true).await?;
                anyhow::Ok(Some(rec.into_transcript()))
            };
            record.await.map_err(|e| format!("{e:#}"))
        })
        .await;
    recorded.clone().map_err(anyhow::Error::msg)
}

fn print(t: &Transcript, server: &str) {
    eprintln!("--- {server} transcript");
    for s in &t.steps {
        eprintln!("{:<40} {:>3}  {}", s.name, s.status, s.request);
    }
}

/// Splits differences into documented and undocumented ones, and finds [`KNOWN`] entries
/// that no longer occur.
fn check_known(diffs: &[Difference]) -> (Vec<&Difference>, Vec<&'static Known>) {
    let matches = |k: &Known, d: &Difference| {
        glob(k.step, &d.step)
            && (glob(k.path, &d.path) || glob(&format!("{}/*", k.path), &d.path))
            && k.values
                .is_none_or(|(real, memory)| d.left == real && d.right == memory)
    };
    let unknown = diffs
        .iter()
        .filter(|d| !KNOWN.iter().any(|k| matches(k, d)))
        .collect();
    let stale = KNOWN
        .iter()
        .filter(|k| !diffs.iter().any(|d| matches(k, d)))
        .collect();
    (unknown, stale)
}

#[tokio::test]
async fn script_passes_on_kube_apiserver() -> Result<()> {
    let Some(real) = real_transcript().await? else {
        return Ok(());
    };
    print(&real, "kube-apiserver");
    // Spot checks of what the script establishes about the real server (beyond statuses).
    let step = |name: &str| real.steps.iter().find(|s| s.name == name);
    let Some(remaining) = step("owner.remaining") else {
        bail!("no owner.remaining step");
    };
    // The garbage collector ran: Background and Foreground removed the children, Orphan
    // kept its child and stripped its ownerReferences.
    let items = remaining.body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["metadata"]["name"], "child-orphan");
    assert!(items[0]["metadata"].get("ownerReferences").is_none());
    let Some(fg) = step("owner.foreground.delete") else {
        bail!("no owner.foreground.delete step");
    };
    assert_eq!(
        fg.body["metadata"]["finalizers"],
        serde_json::json!(["foregroundDeletion"])
    );
    let Some(ns) = step("namespace.gone") else {
        bail!("no namespace.gone step");
    };
    assert_eq!(
        ns.status, 404,
        "the namespace controller finishes namespace deletion"
    );
    Ok(())
}

/// Every [`KNOWN`] entry is in docs/apiserver.md's "Differences from kube-apiserver" table.
#[test]
fn known_differences_are_documented() -> Result<()> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/apiserver.md"))?;
    let Some((_, section)) = doc.split_once("\n## Differences from kube-apiserver\n") else {
        bail!("docs/apiserver.md has no section \"Differences from kube-apiserver\"");
    };
    let section = section.split("\n## ").next().unwrap_or_default();
    let missing: Vec<String> = KNOWN
        .iter()
        .map(|k| format!("| `{}` | `{}` |", k.step, k.path))
        .filter(|row| !section.contains(row.as_str()))
        .collect();
    if !missing.is_empty() {
        bail!("docs/apiserver.md lacks rows starting {missing:#?}");
    }
    Ok(())
}

/// The same script on capstan-apiserver, compared with kube-apiserver's answers.
#[tokio::test]
async fn memory_server_matches_kube_apiserver() -> Result<()> {
    let Some(real) = real_transcript().await? else {
        return Ok(());
    };
    let memory = TestServer::memory().await?;
    let rec = script::run(Recorder::new(memory.client().await?), false).await?;
    let memory = rec.into_transcript();
    print(&memory, "capstan-apiserver");
    report(&diff(&real, &memory))
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|i| rest.is_char_boundary(*i))
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

fn report(diffs: &[Difference]) -> Result<()> {
    for d in diffs {
        eprintln!("difference: {d}");
    }
    let (unknown, stale) = check_known(diffs);
    for d in &unknown {
        eprintln!("UNDOCUMENTED difference: {d}");
    }
    for k in &stale {
        eprintln!(
            "listed difference no longer occurs: {} {} ({})",
            k.step, k.path, k.reason
        );
    }
    if !unknown.is_empty() || !stale.is_empty() {
        bail!(
            "{} undocumented difference(s), {} stale KNOWN entr(y/ies): fix capstan-apiserver or list them in KNOWN and docs/apiserver.md",
            unknown.len(),
            stale.len()
        );
    }
    Ok(())
}
