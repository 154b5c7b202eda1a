//! The snapshot a reconcile reads: the primary, related objects by relation, now.

use crate::Error;
use crate::bindings::capstan::reconciler::types as wit;
use serde::de::DeserializeOwned;

/// Everything one reconcile may read, as the host sent it (JSON text).
///
/// Objects are parsed on demand into whatever type the plugin asks for, so a
/// plugin parses only what it uses, and only the fields its types declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    raw: wit::Snapshot,
}

impl Snapshot {
    /// Wrap the snapshot received from the host.
    pub fn from_wit(raw: wit::Snapshot) -> Self {
        Self { raw }
    }

    /// A snapshot of `primary` at `now` (RFC 3339) with no relations; add
    /// them with [`Snapshot::with_related`]. For tests and tools.
    pub fn new(primary: &serde_json::Value, now: &str) -> Self {
        Self {
            raw: wit::Snapshot {
                primary: primary.to_string(),
                related: Vec::new(),
                now: now.to_owned(),
                workload: wit::Connection::NotApplicable,
            },
        }
    }

    /// Add relation `name` with these objects; `synced` false means the
    /// host's cache had not finished listing that kind.
    pub fn with_related(mut self, name: &str, synced: bool, objects: &[serde_json::Value]) -> Self {
        self.raw.related.push(wit::RelatedObjects {
            relation: name.to_owned(),
            synced,
            objects: objects.iter().map(|o| o.to_string()).collect(),
        });
        self
    }

    /// Set the state of the host's connection to the workload cluster.
    pub fn with_workload(mut self, connection: wit::Connection) -> Self {
        self.raw.workload = connection;
        self
    }

    /// The state of the host's connection to the primary's workload cluster.
    pub fn workload(&self) -> wit::Connection {
        self.raw.workload
    }

    /// The WIT record, e.g. to hand to a runtime.
    pub fn into_wit(self) -> wit::Snapshot {
        self.raw
    }

    /// The WIT record by reference.
    pub fn as_wit(&self) -> &wit::Snapshot {
        &self.raw
    }

    /// The host's time of this reconcile, RFC 3339 with a `Z` offset. Use it
    /// for condition transition times instead of any clock.
    pub fn now(&self) -> &str {
        &self.raw.now
    }

    /// The primary object's JSON text.
    pub fn primary_json(&self) -> &str {
        &self.raw.primary
    }

    /// The primary object parsed into `T` (unknown fields are skipped unless
    /// `T` says otherwise). A primary that does not parse is a terminal error.
    pub fn primary<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.raw.primary)
            .map_err(|e| Error::terminal(format!("primary object does not parse: {e}")))
    }

    /// The raw entry of relation `name`, if the host sent one.
    pub fn relation(&self, name: &str) -> Option<&wit::RelatedObjects> {
        self.raw.related.iter().find(|r| r.relation == name)
    }

    /// Whether the host's cache for relation `name` was synced. When false,
    /// absence of an object proves nothing: wait rather than create.
    pub fn synced(&self, name: &str) -> bool {
        self.relation(name).is_some_and(|r| r.synced)
    }

    /// The JSON texts of relation `name` (empty if the host sent none).
    pub fn related_json(&self, name: &str) -> &[String] {
        self.relation(name).map_or(&[], |r| r.objects.as_slice())
    }

    /// The objects of relation `name` parsed into `T`. An object that does not
    /// parse is a terminal error naming the relation.
    pub fn related<T: DeserializeOwned>(&self, name: &str) -> Result<Vec<T>, Error> {
        self.related_json(name)
            .iter()
            .map(|o| {
                serde_json::from_str(o).map_err(|e| {
                    Error::terminal(format!("object of relation {name} does not parse: {e}"))
                })
            })
            .collect()
    }

    /// The single object of relation `name`, if there is exactly one or more
    /// (the first); `None` when there is none.
    pub fn related_one<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        match self.related_json(name).first() {
            None => Ok(None),
            Some(o) => serde_json::from_str(o).map(Some).map_err(|e| {
                Error::terminal(format!("object of relation {name} does not parse: {e}"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(serde::Deserialize)]
    struct Named {
        metadata: crate::meta::ObjectMeta,
    }

    #[test]
    fn relations_parse_by_name_and_report_sync() {
        let s = Snapshot::new(&json!({"metadata": {"name": "c"}}), "2026-01-01T00:00:00Z")
            .with_related(
                "machines",
                true,
                &[json!({"metadata": {"name": "m1"}, "extra": [1, 2]})],
            )
            .with_related("infra", false, &[]);
        let ms: Vec<Named> = s.related("machines").expect("parses");
        assert_eq!(ms[0].metadata.name, "m1");
        assert!(s.synced("machines"));
        assert!(!s.synced("infra"));
        assert!(!s.synced("undeclared"));
        assert!(s.related::<Named>("undeclared").expect("empty").is_empty());
        assert!(s.related_one::<Named>("infra").expect("none").is_none());
        assert_eq!(s.primary::<Named>().expect("parses").metadata.name, "c");
        let bad = Snapshot::new(&json!({"metadata": 5}), "t");
        assert!(matches!(bad.primary::<Named>(), Err(Error::Terminal(_))));
    }
}
