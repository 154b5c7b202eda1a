//! The in-memory cloud: each workload cluster is a capstan-apiserver instance in this process, each VM a record.
//!
//! [`InMemoryCloud`] implements [`Cloud`] for Capstan's in-memory infrastructure provider,
//! as Cluster API's in-memory backend does with its in-process API servers. Per cluster
//! (`namespace/name`): one [`Instance`] (the store exists from `reserve_endpoint`, the port
//! is bound at once on `127.0.0.1:0` so the endpoint never changes, HTTPS starts with
//! `start_api_server` under the cluster's CA) and its VMs. `release_endpoint` stops the
//! server and drops everything. The trait's calls are synchronous (plugins call them from
//! blocking threads); serving is spawned on the tokio runtime captured at construction.
//!
//! Scale: an instance costs a store, one accept task and one task per open connection; no
//! thread pool or runtime per cluster, so thousands share one process.

use super::{Cloud, Endpoint, ObjectKey, Vm};
use capstan_apiserver::{Instance, InstanceOptions};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::runtime::Handle;

/// The cloud's metrics.
#[derive(Clone, Debug, Default)]
pub struct CloudMetrics {
    /// Reserved endpoints (workload cluster stores) held.
    pub endpoints: Gauge,
    /// Workload API servers serving.
    pub servers: Gauge,
    /// VMs created.
    pub vms_created: Counter,
    /// VMs deleted.
    pub vms_deleted: Counter,
}

impl CloudMetrics {
    /// Metrics registered in `registry` as `capstan_cloud_*`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "capstan_cloud_endpoints",
            "Workload cluster endpoints reserved by the in-memory cloud",
            m.endpoints.clone(),
        );
        registry.register(
            "capstan_cloud_api_servers",
            "Workload cluster API servers serving",
            m.servers.clone(),
        );
        registry.register(
            "capstan_cloud_vms_created",
            "Simulated VMs created",
            m.vms_created.clone(),
        );
        registry.register(
            "capstan_cloud_vms_deleted",
            "Simulated VMs deleted",
            m.vms_deleted.clone(),
        );
        m
    }
}

#[derive(Debug)]
struct Site {
    instance: Instance,
    vms: Mutex<BTreeMap<String, Vm>>,
}

/// Workload clusters simulated in this process (see the module docs).
#[derive(Debug)]
pub struct InMemoryCloud {
    handle: Handle,
    bind: String,
    options: InstanceOptions,
    sites: Mutex<HashMap<String, Arc<Site>>>,
    metrics: CloudMetrics,
}

impl InMemoryCloud {
    /// A cloud serving on the current tokio runtime (call from within it), endpoints on
    /// `127.0.0.1`.
    pub fn new(metrics: CloudMetrics) -> Self {
        Self::with_handle(Handle::current(), metrics)
    }

    /// A cloud serving on `handle`'s runtime.
    pub fn with_handle(handle: Handle, metrics: CloudMetrics) -> Self {
        Self {
            handle,
            bind: "127.0.0.1:0".into(),
            options: InstanceOptions::default(),
            sites: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The workload cluster instance of `cluster`, if reserved (tests, the simulator).
    pub fn instance(&self, cluster: &str) -> Option<Instance> {
        self.sites.lock().get(cluster).map(|s| s.instance.clone())
    }

    /// Clusters with a reserved endpoint.
    pub fn clusters(&self) -> Vec<String> {
        let mut v: Vec<String> = self.sites.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// The metrics.
    pub fn metrics(&self) -> &CloudMetrics {
        &self.metrics
    }

    fn site(&self, cluster: &str) -> Result<Arc<Site>, String> {
        self.sites
            .lock()
            .get(cluster)
            .cloned()
            .ok_or_else(|| format!("cluster {cluster} has no reserved endpoint"))
    }
}

fn endpoint(i: &Instance) -> Endpoint {
    let a = i.local_addr();
    Endpoint {
        host: a.ip().to_string(),
        port: a.port(),
    }
}

fn parse_object(object: &str) -> Result<serde_json::Value, String> {
    let v: serde_json::Value =
        serde_json::from_str(object).map_err(|e| format!("object is not JSON: {e}"))?;
    if !v.is_object() {
        return Err("object is not a JSON object".into());
    }
    Ok(v)
}

impl Cloud for InMemoryCloud {
    fn reserve_endpoint(&self, cluster: &str) -> Result<Endpoint, String> {
        let mut sites = self.sites.lock();
        if let Some(s) = sites.get(cluster) {
            return Ok(endpoint(&s.instance));
        }
        let instance = Instance::reserve(&self.bind, &self.options)
            .map_err(|e| format!("cluster {cluster}: cannot reserve an endpoint: {e}"))?;
        let ep = endpoint(&instance);
        sites.insert(
            cluster.to_string(),
            Arc::new(Site {
                instance,
                vms: Mutex::new(BTreeMap::new()),
            }),
        );
        self.metrics.endpoints.set(sites.len() as i64);
        tracing::debug!(cluster, port = ep.port, "endpoint reserved");
        Ok(ep)
    }

    fn start_api_server(
        &self,
        cluster: &str,
        ca_certificate: &str,
        ca_key: &str,
    ) -> Result<(), String> {
        let site = self.site(cluster)?;
        if site.instance.is_serving() {
            return Ok(());
        }
        let _rt = self.handle.enter();
        site.instance
            .serve_tls(ca_certificate, ca_key)
            .map_err(|e| format!("cluster {cluster}: cannot start the api server: {e}"))?;
        self.metrics.servers.inc();
        tracing::debug!(cluster, "api server started");
        Ok(())
    }

    fn api_server_running(&self, cluster: &str) -> bool {
        self.sites
            .lock()
            .get(cluster)
            .is_some_and(|s| s.instance.is_serving())
    }

    fn release_endpoint(&self, cluster: &str) -> Result<(), String> {
        let site = {
            let mut sites = self.sites.lock();
            let s = sites.remove(cluster);
            self.metrics.endpoints.set(sites.len() as i64);
            s
        };
        if let Some(site) = site {
            if site.instance.is_serving() {
                self.metrics.servers.dec();
            }
            site.instance.stop();
            tracing::debug!(cluster, "endpoint released");
        }
        Ok(())
    }

    fn create_vm(&self, cluster: &str, name: &str) -> Result<Vm, String> {
        let site = self.site(cluster)?;
        let mut vms = site.vms.lock();
        if let Some(vm) = vms.get(name) {
            return Ok(vm.clone());
        }
        let vm = Vm {
            provider_id: format!("in-memory://{name}"),
            created: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or_else(|_| jiff::Timestamp::now())
                .to_string(),
        };
        vms.insert(name.to_string(), vm.clone());
        self.metrics.vms_created.inc();
        Ok(vm)
    }

    fn get_vm(&self, cluster: &str, name: &str) -> Option<Vm> {
        self.site(cluster).ok()?.vms.lock().get(name).cloned()
    }

    fn delete_vm(&self, cluster: &str, name: &str) -> Result<(), String> {
        let Ok(site) = self.site(cluster) else {
            return Ok(());
        };
        if site.vms.lock().remove(name).is_some() {
            self.metrics.vms_deleted.inc();
        }
        Ok(())
    }

    fn put_object(&self, cluster: &str, object: &str) -> Result<(), String> {
        let site = self.site(cluster)?;
        site.instance
            .put(parse_object(object)?)
            .map(|_| ())
            .map_err(|e| format!("cluster {cluster}: {}", e.message))
    }

    fn get_object(&self, cluster: &str, object: &ObjectKey) -> Result<Option<String>, String> {
        let site = self.site(cluster)?;
        site.instance
            .get(
                &object.api_version,
                &object.kind,
                &object.namespace,
                &object.name,
            )
            .map(|o| o.map(|v| v.to_string()))
            .map_err(|e| format!("cluster {cluster}: {}", e.message))
    }

    fn delete_object(&self, cluster: &str, object: &ObjectKey) -> Result<(), String> {
        let Ok(site) = self.site(cluster) else {
            return Ok(());
        };
        site.instance
            .delete(
                &object.api_version,
                &object.kind,
                &object.namespace,
                &object.name,
            )
            .map(|_| ())
            .map_err(|e| format!("cluster {cluster}: {}", e.message))
    }
}
