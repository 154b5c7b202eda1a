//! Constructors that make a `describe()` read like a declaration.

use crate::{Gvk, KeyMapping, Permission, PluginInfo, Relation, RelationSelector, Verbs, Watch};

impl Gvk {
    /// A group/version/kind; `group` is empty for the core group.
    pub fn new(group: &str, version: &str, kind: &str) -> Self {
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
        }
    }

    /// The `apiVersion` string: `group/version`, or `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

impl PluginInfo {
    /// A plugin reconciling `primary`, with nothing else declared yet.
    pub fn new(name: &str, version: &str, primary: Gvk) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            primary,
            watches: Vec::new(),
            relations: Vec::new(),
            permissions: Vec::new(),
            finalizer: None,
            concurrency: None,
            resync_seconds: None,
        }
    }

    /// Also reconcile the primary when `kind` changes, mapped by `mapping`.
    pub fn watch(mut self, kind: Gvk, mapping: KeyMapping) -> Self {
        self.watches.push(Watch { kind, mapping });
        self
    }

    /// Carry the objects of `kind` found by `selector` as relation `name`.
    pub fn relation(mut self, name: &str, kind: Gvk, selector: RelationSelector) -> Self {
        self.relations.push(Relation {
            name: name.to_owned(),
            kind,
            selector,
        });
        self
    }

    /// Allow `verbs` on `kind`.
    pub fn permit(mut self, kind: Gvk, verbs: Verbs) -> Self {
        self.permissions.push(Permission { kind, verbs });
        self
    }

    /// Manage this finalizer on primary objects.
    pub fn finalizer(mut self, finalizer: &str) -> Self {
        self.finalizer = Some(finalizer.to_owned());
        self
    }

    /// Default concurrent reconciles.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// Default full-resync period in seconds.
    pub fn resync_seconds(mut self, s: u32) -> Self {
        self.resync_seconds = Some(s);
        self
    }
}
