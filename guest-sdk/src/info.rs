//! Constructors that make a `describe()` read like a declaration.

use crate::{
    Capabilities, Gvk, KeyMapping, Permission, PluginInfo, Relation, RelationSelector, Target,
    Verbs, Watch,
};

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
            capabilities: Capabilities::empty(),
        }
    }

    /// Also reconcile the primary when `kind` changes in the management
    /// cluster, mapped by `mapping`.
    pub fn watch(mut self, kind: Gvk, mapping: KeyMapping) -> Self {
        self.watches.push(Watch {
            kind,
            mapping,
            target: Target::Management,
        });
        self
    }

    /// Also reconcile the primary when `kind` changes in its workload
    /// cluster, mapped by `mapping` (e.g. Nodes by `spec.providerID`).
    pub fn watch_workload(mut self, kind: Gvk, mapping: KeyMapping) -> Self {
        self.watches.push(Watch {
            kind,
            mapping,
            target: Target::Workload,
        });
        self
    }

    /// Carry the management objects of `kind` found by `selector` as
    /// relation `name`, looked up in the primary's namespace.
    pub fn relation(self, name: &str, kind: Gvk, selector: RelationSelector) -> Self {
        self.relation_in(name, kind, selector, Target::Management, None)
    }

    /// Carry the objects of `kind` in the primary's workload cluster found by
    /// `selector` as relation `name`, in `namespace` or in the whole cluster.
    pub fn workload_relation(
        self,
        name: &str,
        kind: Gvk,
        selector: RelationSelector,
        namespace: Option<&str>,
    ) -> Self {
        self.relation_in(name, kind, selector, Target::Workload, namespace)
    }

    /// Carry the objects of `kind` found by `selector` in `target`, in
    /// `namespace` instead of the default scope when given.
    pub fn relation_in(
        mut self,
        name: &str,
        kind: Gvk,
        selector: RelationSelector,
        target: Target,
        namespace: Option<&str>,
    ) -> Self {
        self.relations.push(Relation {
            name: name.to_owned(),
            kind,
            selector,
            target,
            namespace: namespace.map(str::to_owned),
        });
        self
    }

    /// Allow `verbs` on `kind` in the management cluster.
    pub fn permit(mut self, kind: Gvk, verbs: Verbs) -> Self {
        self.permissions.push(Permission {
            kind,
            verbs,
            target: Target::Management,
        });
        self
    }

    /// Allow `verbs` on `kind` in the primary's workload cluster.
    pub fn permit_workload(mut self, kind: Gvk, verbs: Verbs) -> Self {
        self.permissions.push(Permission {
            kind,
            verbs,
            target: Target::Workload,
        });
        self
    }

    /// Declare host capabilities the plugin uses (`crypto`, `cloud`); the
    /// host refuses calls to undeclared ones.
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities |= capabilities;
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
