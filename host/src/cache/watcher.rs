//! Feeds one kind's cache from a kube-runtime watcher (list + watch, bookmarks, backoff).

use super::{CachedObject, KindCache};
use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

fn convert(kind: &KindCache, obj: DynamicObject) -> Option<CachedObject> {
    let value = match serde_json::to_value(obj) {
        Ok(v) => v,
        Err(error) => {
            tracing::warn!(kind = %kind.gvk(), %error, "dropping object that does not serialize");
            return None;
        }
    };
    match CachedObject::from_value(value) {
        Ok(o) => Some(o),
        Err(error) => {
            tracing::warn!(kind = %kind.gvk(), %error, "dropping malformed object");
            None
        }
    }
}

/// Watch every object of `cache`'s kind (all namespaces) until `stop` fires.
///
/// Watch errors are logged and retried with kube-runtime's default backoff; a relist
/// replaces the store atomically ([`KindCache::replace`]).
pub async fn run_watcher(
    client: kube::Client,
    resource: ApiResource,
    cache: Arc<KindCache>,
    stop: CancellationToken,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut initial: Option<Vec<CachedObject>> = None;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return };
        match ev {
            Ok(Event::Apply(o)) => {
                if let Some(o) = convert(&cache, o) {
                    cache.apply(o);
                }
            }
            Ok(Event::Delete(o)) => {
                if let Some(o) = convert(&cache, o) {
                    cache.delete(&o.key);
                }
            }
            Ok(Event::Init) => initial = Some(Vec::new()),
            Ok(Event::InitApply(o)) => {
                if let Some(o) = convert(&cache, o) {
                    initial.get_or_insert_with(Vec::new).push(o);
                }
            }
            Ok(Event::InitDone) => {
                let objects = initial.take().unwrap_or_default();
                tracing::debug!(kind = %cache.gvk(), objects = objects.len(), "cache synced");
                cache.replace(objects);
            }
            Err(error) => {
                tracing::warn!(kind = %cache.gvk(), %error, "watch failed; retrying with backoff");
            }
        }
    }
}
