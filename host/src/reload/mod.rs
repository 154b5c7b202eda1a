//! Hot reload: watches the plugin directory and swaps, adds, removes and shadows plugins while the manager runs.
//!
//! The directory (`capstan run --plugins DIR`) is watched with notify's debouncer; after
//! each quiet period (`--plugin-reload-debounce`), and every [`ReloadOptions::rescan`] in
//! case an event was missed, the whole directory is rescanned and compared with what
//! serves, by file and sha256 digest. Comparing states rather than interpreting events
//! makes renames, editors' save dances and ConfigMap volumes' symlink swaps all the same
//! case. Per file:
//!
//! - **new or changed `NAME.wasm`**: the component is loaded off the async workers (on the
//!   blocking pool: compile or artifact cache, world and WIT version check, `describe()`,
//!   validation of the declarations), kinds it declares that nothing cached yet are resolved,
//!   watched and synced, and only then is it swapped in ([`Controller::swap`]): reconciles
//!   in flight finish on the old version, the next ones run the new one, and every object
//!   is queued again so each converges to the new version's result. A file with a new
//!   plugin name starts a new controller.
//! - **a digest seen before** (a rollback, a promotion of a shadow) reuses the loaded
//!   version: no compile, no `describe()`; `capstan_plugin_reloads_total{result="cached"}`.
//! - **removed `NAME.wasm`**: the controller is retired ([`Controller::retire`]): it takes
//!   no new keys and stops once in-flight reconciles finish.
//! - **`NAME.shadow.wasm`**: loaded the same way and run as the shadow of the serving
//!   plugin with the same `describe()` name ([`crate::controller::Shadow`]): same snapshots,
//!   no writes, differences counted and logged. Promotion is a rename onto `NAME.wasm` (the
//!   loaded version is reused); removing the file stops the shadow.
//! - **a file that fails** (unreadable, not a component, wrong world or WIT version,
//!   `describe()` traps, invalid declarations, an undiscoverable kind, another name than
//!   the file served, a name another file serves) leaves the previous version serving; the
//!   failure is logged with file, plugin and reason, counted in
//!   `capstan_plugin_reloads_total{result="error"}` and recorded as a Warning Event
//!   `PluginReloadFailed` regarding the manager's Pod when `POD_NAME` and `POD_NAMESPACE`
//!   are set (the downward API; without them a log line says the Event is skipped). The
//!   same bytes are not retried until the file changes.
//!
//! Kinds are never dropped on reload: caches are shared by kind between plugins, so a kind a
//! new version no longer declares keeps its cache (and watch) until the manager restarts;
//! only the plugin's own listeners on it are removed.

use crate::cache::run_watcher;
use crate::controller::{Controller, ControllerOptions, Reconcile, Shadow};
use crate::manager::{Kinds, declared_kinds};
use crate::runtime::Runtime;
use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why one plugin file was not applied (logged, counted, recorded as an Event).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read (or is over the size limit).
    #[error("cannot read {file}: {reason}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The runtime refused the component.
    #[error("{file}: {source}")]
    Load {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: crate::runtime::RuntimeError,
    },
    /// The file describes another plugin than the one it served.
    #[error(
        "{file} now describes plugin {found}, it served {serving}; remove it and add a new file instead"
    )]
    Renamed {
        /// The file.
        file: PathBuf,
        /// The plugin it served.
        serving: String,
        /// The plugin it describes now.
        found: String,
    },
    /// Another file serves a plugin of that name.
    #[error("{file}: plugin {plugin} is already served by {other}")]
    Duplicate {
        /// The file.
        file: PathBuf,
        /// The plugin name.
        plugin: String,
        /// The file serving it.
        other: PathBuf,
    },
    /// A shadow names a plugin that does not serve.
    #[error("{file}: no serving plugin named {plugin} to shadow")]
    NothingToShadow {
        /// The shadow file.
        file: PathBuf,
        /// The name its describe() gives.
        plugin: String,
    },
    /// A declared kind could not be registered or did not sync.
    #[error("{file}: plugin {plugin}: {reason}")]
    Kind {
        /// The file.
        file: PathBuf,
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// The controller refused the replacement.
    #[error("{file}: {source}")]
    Controller {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: crate::controller::ControllerError,
    },
}

/// The Pod a manager runs in: what reload failure Events regard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID, when known (`POD_UID`).
    pub uid: String,
}

impl PodRef {
    /// From the downward API variables `POD_NAMESPACE`, `POD_NAME` (both required) and
    /// `POD_UID` (optional).
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(Self {
            namespace: var("POD_NAMESPACE")?,
            name: var("POD_NAME")?,
            uid: var("POD_UID").unwrap_or_default(),
        })
    }
}

/// Reloader settings.
#[derive(Clone, Debug)]
pub struct ReloadOptions {
    /// The plugin directory.
    pub dir: PathBuf,
    /// Quiet time after the last file event before rescanning.
    pub debounce: Duration,
    /// Full rescan period, in case a file event was missed (network filesystems).
    pub rescan: Duration,
    /// What failure Events regard; `None` skips Events.
    pub event_target: Option<PodRef>,
    /// Largest plugin file read.
    pub max_file_bytes: u64,
    /// How long a newly declared kind may take to sync before the reload fails.
    pub sync_timeout: Duration,
    /// Loaded versions kept by digest for reuse (least recently used dropped first).
    pub keep_versions: usize,
}

impl ReloadOptions {
    /// Defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            debounce: Duration::from_millis(25),
            rescan: Duration::from_secs(60),
            event_target: None,
            max_file_bytes: 256 << 20,
            sync_timeout: Duration::from_secs(120),
            keep_versions: 16,
        }
    }
}

/// One file handled by the reloader (for tests, benchmarks and tooling).
#[derive(Clone, Debug)]
pub struct ReloadEvent {
    /// The file.
    pub file: PathBuf,
    /// The plugin (the file name when the file never described one).
    pub plugin: String,
    /// One of [`crate::metrics::RELOAD_RESULTS`].
    pub result: &'static str,
    /// The file's digest ("" when removed or unreadable).
    pub digest: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// What the manager hands the reloader when it starts.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) kinds: Kinds,
    /// Options of the controllers it starts (their workload access is `cluster_cache`).
    pub(crate) controller: ControllerOptions,
    /// The manager's cluster cache; started here if the first plugin with workload
    /// declarations arrives while running.
    pub(crate) cluster_cache: Arc<crate::clustercache::ClusterCache>,
    pub(crate) watch_stop: CancellationToken,
}

/// The reloader of one manager; see the module docs.
#[derive(Debug)]
pub struct Reloader {
    runtime: Runtime,
    options: ReloadOptions,
    events: broadcast::Sender<ReloadEvent>,
}

/// Whether `path` names a shadow (`*.shadow.wasm`).
pub fn is_shadow(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".shadow.wasm"))
}

/// The plugin files of `dir`, sorted: `*.wasm`, dotfiles excluded (editors' and atomic
/// writers' temporaries).
pub fn plugin_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "wasm")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_file(path: &Path, max: u64) -> Result<(String, Vec<u8>), String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > max {
        return Err(format!("{len} bytes, over the {max}-byte limit"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    Ok((crate::runtime::sha256_hex(&bytes), bytes))
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// What serves under one plugin name.
struct Served {
    controller: Arc<Controller>,
    file: Option<PathBuf>,
    shadow_file: Option<PathBuf>,
}

/// What a file last resolved to.
struct FileState {
    digest: String,
    /// The plugin it serves or shadows (`None` when it never loaded).
    plugin: Option<String>,
}

/// The reloader's state while running.
struct State {
    runtime: Runtime,
    options: ReloadOptions,
    events: broadcast::Sender<ReloadEvent>,
    ctx: Context,
    stop: CancellationToken,
    served: BTreeMap<String, Served>,
    files: BTreeMap<PathBuf, FileState>,
    versions: HashMap<String, (Arc<dyn Reconcile>, u64)>,
    uses: u64,
    tasks: Vec<JoinHandle<()>>,
    watchers: Vec<JoinHandle<()>>,
    said_no_events: bool,
}

impl Reloader {
    /// A reloader loading into `runtime` (share the one the initial plugins came from, so
    /// memos carry over between versions).
    pub fn new(runtime: Runtime, options: ReloadOptions) -> Self {
        Self {
            runtime,
            options,
            events: broadcast::channel(1024).0,
        }
    }

    /// Every file handled from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReloadEvent> {
        self.events.subscribe()
    }

    /// Watch and apply until `stop`; then wait for the controllers this reloader started
    /// to drain, and return the watchers of the kinds it registered (the manager stops
    /// them with the others).
    pub(crate) async fn run(
        self,
        ctx: Context,
        initial: Vec<Arc<Controller>>,
        stop: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let dir = self.options.dir.clone();
        let debouncer = new_debouncer(
            self.options.debounce,
            None,
            move |r: DebounceEventResult| {
                match r {
                    // Opening and reading files (our own scans among them) are access events:
                    // they change nothing, and acting on them would rescan in a loop.
                    Ok(events) => {
                        if events
                            .iter()
                            .any(|e| !matches!(e.kind, EventKind::Access(_)))
                        {
                            let _ = tx.send(());
                        }
                    }
                    Err(errors) => {
                        for error in errors {
                            tracing::warn!(%error, "plugin directory watch error; rescanning");
                        }
                        let _ = tx.send(());
                    }
                }
            },
        )
        .and_then(|mut d| d.watch(&dir, RecursiveMode::NonRecursive).map(|()| d));
        let _debouncer = match debouncer {
            Ok(d) => Some(d),
            Err(error) => {
                tracing::error!(dir = %dir.display(), %error, "cannot watch the plugin directory; falling back to periodic rescans");
                None
            }
        };
        let mut state = State {
            served: initial
                .into_iter()
                .map(|c| {
                    (
                        c.name().to_string(),
                        Served {
                            controller: c,
                            file: None,
                            shadow_file: None,
                        },
                    )
                })
                .collect(),
            runtime: self.runtime,
            options: self.options,
            events: self.events,
            ctx,
            stop: stop.clone(),
            files: BTreeMap::new(),
            versions: HashMap::new(),
            uses: 0,
            tasks: Vec::new(),
            watchers: Vec::new(),
            said_no_events: false,
        };
        tracing::info!(dir = %dir.display(), debounce = ?state.options.debounce, "watching the plugin directory");
        state.scan().await;
        let rescan = state.options.rescan.max(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                got = rx.recv() => {
                    if got.is_none() {
                        break;
                    }
                    while rx.try_recv().is_ok() {}
                    state.scan().await;
                }
                _ = tokio::time::sleep(rescan) => state.scan().await,
            }
        }
        for t in state.tasks {
            let _ = t.await;
        }
        state.watchers
    }
}

impl State {
    fn emit(&self, file: &Path, plugin: &str, result: &'static str, digest: &str) {
        self.ctx.kinds.metrics.plugin_reload(plugin, result);
        let _ = self.events.send(ReloadEvent {
            file: file.to_owned(),
            plugin: plugin.to_string(),
            result,
            digest: digest.to_string(),
            error: None,
        });
    }

    /// Rescan the directory and apply every difference (changes first, so a rename of a
    /// shadow onto its serving file swaps before the shadow stops).
    async fn scan(&mut self) {
        let dir = self.options.dir.clone();
        let max = self.options.max_file_bytes;
        let listed = tokio::task::spawn_blocking(move || {
            plugin_files(&dir).map(|files| {
                files
                    .into_iter()
                    .map(|f| {
                        let r = read_file(&f, max);
                        (f, r)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .await;
        let listed = match listed {
            Ok(Ok(l)) => l,
            Ok(Err(error)) => {
                tracing::error!(dir = %self.options.dir.display(), %error, "cannot list the plugin directory; keeping every plugin as it is");
                return;
            }
            Err(error) => {
                tracing::error!(%error, "plugin directory scan failed");
                return;
            }
        };
        let present: Vec<PathBuf> = listed.iter().map(|(f, _)| f.clone()).collect();
        // Serving files first, then shadows: a shadow needs its plugin serving.
        let (shadows, serving): (Vec<_>, Vec<_>) =
            listed.into_iter().partition(|(f, _)| is_shadow(f));
        for (file, read) in serving.into_iter().chain(shadows) {
            let (digest, bytes) = match read {
                Ok(r) => r,
                Err(reason) => {
                    // Vanished between listing and reading: the next scan removes it. An
                    // unreadable file is reported once, not at every scan.
                    let reported = self.files.get(&file).is_some_and(|s| s.digest.is_empty());
                    if file.exists() && !reported {
                        let e = ReloadError::Read {
                            file: file.clone(),
                            reason,
                        };
                        self.fail(&file, "", e).await;
                    }
                    continue;
                }
            };
            if self.files.get(&file).is_some_and(|s| s.digest == digest) {
                continue;
            }
            if self.recognise(&file, &digest) {
                continue;
            }
            let result = if is_shadow(&file) {
                self.apply_shadow(&file, &digest, bytes).await
            } else {
                self.apply_serving(&file, &digest, bytes).await
            };
            if let Err(e) = result {
                self.fail(&file, &digest, e).await;
            }
        }
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|f| !present.contains(f))
            .cloned()
            .collect();
        let (gone_shadows, gone_serving): (Vec<_>, Vec<_>) =
            gone.into_iter().partition(|f| is_shadow(f));
        for file in gone_shadows.into_iter().chain(gone_serving) {
            self.remove(&file);
        }
    }

    /// At start, a file whose digest an initial plugin was loaded from serves that plugin.
    fn recognise(&mut self, file: &Path, digest: &str) -> bool {
        if is_shadow(file) || self.files.contains_key(file) {
            return false;
        }
        let Some((name, served)) = self
            .served
            .iter_mut()
            .find(|(_, s)| s.file.is_none() && s.controller.plugin().digest() == Some(digest))
        else {
            return false;
        };
        served.file = Some(file.to_owned());
        let name = name.clone();
        let plugin = served.controller.plugin();
        self.remember(digest, plugin);
        self.files.insert(
            file.to_owned(),
            FileState {
                digest: digest.to_string(),
                plugin: Some(name),
            },
        );
        true
    }

    fn remember(&mut self, digest: &str, plugin: Arc<dyn Reconcile>) {
        self.uses += 1;
        self.versions
            .insert(digest.to_string(), (plugin, self.uses));
        while self.versions.len() > self.options.keep_versions.max(1) {
            let Some(oldest) = self
                .versions
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(d, _)| d.clone())
            else {
                break;
            };
            self.versions.remove(&oldest);
        }
    }

    /// The plugin of `digest`: reused when loaded before, else loaded on the blocking pool.
    /// `true` when reused.
    async fn obtain(
        &mut self,
        file: &Path,
        digest: &str,
        bytes: Vec<u8>,
    ) -> Result<(Arc<dyn Reconcile>, bool), ReloadError> {
        if let Some((p, _)) = self.versions.get(digest) {
            let p = Arc::clone(p);
            self.remember(digest, Arc::clone(&p));
            return Ok((p, true));
        }
        let runtime = self.runtime.clone();
        let loaded = tokio::task::spawn_blocking(move || runtime.load(&bytes))
            .await
            .map_err(|e| ReloadError::Read {
                file: file.to_owned(),
                reason: format!("loading task failed: {e}"),
            })?
            .map_err(|source| ReloadError::Load {
                file: file.to_owned(),
                source,
            })?;
        let p: Arc<dyn Reconcile> = Arc::new(loaded);
        self.remember(digest, Arc::clone(&p));
        Ok((p, false))
    }

    /// Register, watch and sync every kind `info` declares that nothing caches yet.
    async fn ensure_kinds(
        &mut self,
        file: &Path,
        plugin: &Arc<dyn Reconcile>,
    ) -> Result<(), ReloadError> {
        let info = plugin.info();
        let err = |reason: String| ReloadError::Kind {
            file: file.to_owned(),
            plugin: info.name.clone(),
            reason,
        };
        let mut new = Vec::new();
        for gvk in declared_kinds(info) {
            let registered = self
                .ctx
                .kinds
                .register(&info.name, &gvk)
                .await
                .map_err(|e| err(format!("{e}")))?;
            if let Some((res, kc)) = registered {
                tracing::info!(plugin = %info.name, kind = %gvk, "watching a newly declared kind");
                self.watchers.push(tokio::spawn(run_watcher(
                    self.ctx.kinds.client.clone(),
                    res.api,
                    Arc::clone(&kc),
                    self.ctx.watch_stop.clone(),
                )));
                new.push((gvk, kc));
            }
        }
        for (gvk, kc) in new {
            tokio::time::timeout(self.options.sync_timeout, kc.wait_synced())
                .await
                .map_err(|_| {
                    err(format!(
                        "kind {gvk} did not sync within {:?}",
                        self.options.sync_timeout
                    ))
                })?;
        }
        Ok(())
    }

    async fn apply_serving(
        &mut self,
        file: &Path,
        digest: &str,
        bytes: Vec<u8>,
    ) -> Result<(), ReloadError> {
        let (plugin, cached) = self.obtain(file, digest, bytes).await?;
        let info = plugin.info();
        let name = info.name.clone();
        if let Some(serving) = self.files.get(file).and_then(|s| s.plugin.clone())
            && serving != name
        {
            return Err(ReloadError::Renamed {
                file: file.to_owned(),
                serving,
                found: name,
            });
        }
        if let Some(other) = self
            .served
            .get(&name)
            .and_then(|s| s.file.clone())
            .filter(|f| f != file)
        {
            return Err(ReloadError::Duplicate {
                file: file.to_owned(),
                plugin: name,
                other,
            });
        }
        if let Some(served) = self.served.get_mut(&name)
            && served.controller.plugin().digest() == Some(digest)
        {
            // The version serving already (a failed file put back): nothing to swap.
            served.file = Some(file.to_owned());
            self.files.insert(
                file.to_owned(),
                FileState {
                    digest: digest.to_string(),
                    plugin: Some(name.clone()),
                },
            );
            tracing::info!(plugin = %name, file = %file.display(), digest = short(digest), "plugin file restored to the version serving");
            self.emit(file, &name, "cached", digest);
            return Ok(());
        }
        self.ensure_kinds(file, &plugin).await?;
        if crate::runtime::validate::uses_workload(info) {
            // The Secrets and Clusters it reads are cached and synced now (ensure_kinds).
            let cc = &self.ctx.cluster_cache;
            crate::manager::register_written_workload_kinds(cc, info);
            if !cc.running() {
                // A second start (two loads in a row) returns at once.
                self.watchers.push(tokio::spawn(
                    Arc::clone(cc).run(self.ctx.watch_stop.clone()),
                ));
            }
        }
        let version = info.version.clone();
        let metrics = Arc::clone(&self.ctx.kinds.metrics);
        match self.served.get_mut(&name) {
            Some(served) => {
                let old = served
                    .controller
                    .swap(Arc::clone(&plugin))
                    .map_err(|source| ReloadError::Controller {
                        file: file.to_owned(),
                        source,
                    })?;
                served.file = Some(file.to_owned());
                metrics.set_plugin_info(
                    &name,
                    Some((&old.info().version, old.digest().unwrap_or(""))),
                    Some((&version, digest)),
                );
                tracing::info!(
                    plugin = %name,
                    file = %file.display(),
                    from_version = %old.info().version,
                    from_digest = short(old.digest().unwrap_or("")),
                    version = %version,
                    digest = short(digest),
                    cached,
                    "plugin reloaded; in-flight reconciles finish on the previous version"
                );
            }
            None => {
                let kinds = &self.ctx.kinds;
                let controller = Controller::new(
                    Arc::clone(&plugin),
                    Arc::clone(&kinds.cache),
                    Arc::clone(&kinds.writes),
                    |n, c| metrics.controller(n, c),
                    self.ctx.controller.clone(),
                )
                .map_err(|source| ReloadError::Controller {
                    file: file.to_owned(),
                    source,
                })?;
                self.tasks
                    .push(tokio::spawn(Arc::clone(&controller).run(self.stop.clone())));
                controller.resync();
                metrics.set_plugin_info(&name, None, Some((&version, digest)));
                tracing::info!(plugin = %name, file = %file.display(), %version, digest = short(digest), cached, "plugin added");
                self.served.insert(
                    name.clone(),
                    Served {
                        controller,
                        file: Some(file.to_owned()),
                        shadow_file: None,
                    },
                );
            }
        }
        self.files.insert(
            file.to_owned(),
            FileState {
                digest: digest.to_string(),
                plugin: Some(name.clone()),
            },
        );
        self.emit(
            file,
            &name,
            if cached { "cached" } else { "success" },
            digest,
        );
        Ok(())
    }

    async fn apply_shadow(
        &mut self,
        file: &Path,
        digest: &str,
        bytes: Vec<u8>,
    ) -> Result<(), ReloadError> {
        let (plugin, _) = self.obtain(file, digest, bytes).await?;
        let name = plugin.info().name.clone();
        let Some(served) = self.served.get_mut(&name) else {
            return Err(ReloadError::NothingToShadow {
                file: file.to_owned(),
                plugin: name,
            });
        };
        if let Some(other) = served.shadow_file.as_ref().filter(|f| f.as_path() != file) {
            return Err(ReloadError::Duplicate {
                file: file.to_owned(),
                plugin: format!("{name} (shadow)"),
                other: other.clone(),
            });
        }
        let label = format!("{} sha256:{}", plugin.info().version, short(digest));
        let shadow = Shadow::new(
            plugin,
            label.clone(),
            self.ctx.kinds.metrics.shadow(&name),
            served.controller.concurrency() as usize,
        );
        served.controller.set_shadow(Some(Arc::new(shadow)));
        served.shadow_file = Some(file.to_owned());
        tracing::info!(plugin = %name, file = %file.display(), shadow = %label, "shadow started: it reconciles the serving version's snapshots and writes nothing");
        self.files.insert(
            file.to_owned(),
            FileState {
                digest: digest.to_string(),
                plugin: Some(name.clone()),
            },
        );
        self.emit(file, &name, "shadow", digest);
        Ok(())
    }

    fn remove(&mut self, file: &Path) {
        let Some(state) = self.files.remove(file) else {
            return;
        };
        let Some(name) = state.plugin else {
            return;
        };
        let Some(served) = self.served.get_mut(&name) else {
            return;
        };
        if is_shadow(file) {
            if served.shadow_file.as_deref() == Some(file) {
                served.controller.set_shadow(None);
                served.shadow_file = None;
                tracing::info!(plugin = %name, file = %file.display(), "shadow stopped");
            }
            return;
        }
        if served.file.as_deref() != Some(file) {
            return;
        }
        let Some(served) = self.served.remove(&name) else {
            return;
        };
        let plugin = served.controller.plugin();
        served.controller.retire();
        self.ctx.kinds.metrics.set_plugin_info(
            &name,
            Some((&plugin.info().version, plugin.digest().unwrap_or(""))),
            None,
        );
        tracing::info!(plugin = %name, file = %file.display(), "plugin file removed; stopping after in-flight reconciles");
        let controller = served.controller;
        self.tasks.push(tokio::spawn(async move {
            controller.stopped().await;
            tracing::info!(plugin = %name, "plugin stopped");
        }));
        self.emit(file, plugin.info().name.as_str(), "removed", "");
    }

    async fn fail(&mut self, file: &Path, digest: &str, error: ReloadError) {
        let previous = self.files.get(file).and_then(|s| s.plugin.clone());
        let plugin = previous.clone().unwrap_or_else(|| {
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let serving = previous
            .as_ref()
            .and_then(|n| self.served.get(n))
            .map(|s| s.controller.plugin());
        let keeps = match &serving {
            Some(p) if !is_shadow(file) => format!(
                "plugin {plugin} keeps serving version {} (sha256:{})",
                p.info().version,
                short(p.digest().unwrap_or(""))
            ),
            Some(_) => format!("the shadow of {plugin} is unchanged"),
            None => "nothing was started from this file".to_string(),
        };
        tracing::error!(
            file = %file.display(),
            plugin = %plugin,
            digest = short(digest),
            error = %error,
            "plugin file rejected; {keeps}"
        );
        // Remember the bytes, so the same content is not retried until it changes.
        self.files.insert(
            file.to_owned(),
            FileState {
                digest: digest.to_string(),
                plugin: previous,
            },
        );
        self.ctx.kinds.metrics.plugin_reload(&plugin, "error");
        let _ = self.events.send(ReloadEvent {
            file: file.to_owned(),
            plugin: plugin.clone(),
            result: "error",
            digest: digest.to_string(),
            error: Some(error.to_string()),
        });
        match self.options.event_target.clone() {
            Some(pod) => {
                let client = self.ctx.kinds.client.clone();
                let note = format!("{error}; {keeps}");
                tokio::spawn(async move { record_event(client, &pod, &plugin, &note).await });
            }
            None if !self.said_no_events => {
                self.said_no_events = true;
                tracing::info!(
                    "POD_NAME and POD_NAMESPACE are not set: plugin reload failures are logged and counted but not recorded as Kubernetes Events"
                );
            }
            None => {}
        }
    }
}

/// Record a Warning Event `PluginReloadFailed` regarding the manager's Pod.
async fn record_event(client: kube::Client, pod: &PodRef, plugin: &str, note: &str) {
    let ar = kube::core::ApiResource {
        group: "events.k8s.io".into(),
        version: "v1".into(),
        api_version: "events.k8s.io/v1".into(),
        kind: "Event".into(),
        plural: "events".into(),
    };
    let now = jiff::Timestamp::now();
    // Events cap `note` at 1 KiB.
    let mut note = note.to_string();
    if note.len() > 1024 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    let body = json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{}.{:016x}", pod.name, rand::random::<u64>()),
            "namespace": pod.namespace,
        },
        "eventTime": format!("{}.{:06}Z", now.strftime("%Y-%m-%dT%H:%M:%S"), now.subsec_microsecond()),
        "reportingController": "capstan.dev/reloader",
        "reportingInstance": pod.name,
        "action": "Reload",
        "reason": "PluginReloadFailed",
        "note": note,
        "type": "Warning",
        "regarding": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
            "fieldPath": format!("plugin:{plugin}"),
        },
    });
    let result = match serde_json::from_value::<kube::api::DynamicObject>(body) {
        Ok(obj) => {
            kube::Api::<kube::api::DynamicObject>::namespaced_with(client, &pod.namespace, &ar)
                .create(&kube::api::PostParams::default(), &obj)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    if let Err(error) = result {
        tracing::warn!(pod = %pod.name, plugin, %error, "recording the reload failure Event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadows_and_plugin_files_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "a.wasm",
            "a.shadow.wasm",
            ".a.wasm.tmp",
            ".hidden.wasm",
            "b.txt",
        ] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let files = plugin_files(dir.path()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["a.shadow.wasm", "a.wasm"]);
        assert!(is_shadow(&files[0]));
        assert!(!is_shadow(&files[1]));
    }

    #[test]
    fn files_over_the_limit_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.wasm");
        std::fs::write(&f, vec![0u8; 100]).unwrap();
        assert!(
            read_file(&f, 10)
                .unwrap_err()
                .contains("over the 10-byte limit")
        );
        let (digest, bytes) = read_file(&f, 100).unwrap();
        assert_eq!(bytes.len(), 100);
        assert_eq!(digest.len(), 64);
    }
}
