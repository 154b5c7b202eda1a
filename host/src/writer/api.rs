//! The write requests the writer sends, behind a small trait so benchmarks can leave the API out.

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::core::ApiResource;
use serde_json::Value;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A kind's REST resource and scope.
#[derive(Clone, Debug)]
pub struct Resource {
    /// Group, version, kind and plural.
    pub api: ApiResource,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
}

/// Why a write request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 409 Conflict on a resourceVersion or uid precondition.
    #[error("conflict: the object changed since it was read")]
    Conflict,
    /// 409 AlreadyExists on create.
    #[error("object already exists")]
    AlreadyExists,
    /// 404 Not Found.
    #[error("object not found")]
    NotFound,
    /// The request body is not an object the client can send.
    #[error("invalid request body: {0}")]
    Body(#[source] serde_json::Error),
    /// Any other failure.
    #[error(transparent)]
    Other(Box<kube::Error>),
}

impl From<kube::Error> for ApiError {
    fn from(e: kube::Error) -> Self {
        match &e {
            kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists" => {
                ApiError::AlreadyExists
            }
            kube::Error::Api(s) if s.code == 409 => ApiError::Conflict,
            kube::Error::Api(s) if s.code == 404 => ApiError::NotFound,
            _ => ApiError::Other(Box::new(e)),
        }
    }
}

/// Create, patch (merge) and delete by resource; events are created like any object.
pub trait WriteApi: Send + Sync + fmt::Debug {
    /// POST `body`; returns the stored object.
    fn create<'a>(
        &'a self,
        res: &'a Resource,
        ns: &'a str,
        body: Value,
    ) -> BoxFut<'a, Result<Value, ApiError>>;
    /// PATCH (JSON merge patch) the object or, with `status`, its status subresource.
    fn patch<'a>(
        &'a self,
        res: &'a Resource,
        ns: &'a str,
        name: &'a str,
        patch: Value,
        status: bool,
    ) -> BoxFut<'a, Result<Value, ApiError>>;
    /// DELETE the object if its uid is still `uid` (background propagation).
    fn delete<'a>(
        &'a self,
        res: &'a Resource,
        ns: &'a str,
        name: &'a str,
        uid: &'a str,
    ) -> BoxFut<'a, Result<(), ApiError>>;
}

/// [`WriteApi`] over a kube client.
#[derive(Clone)]
pub struct KubeWriteApi {
    client: kube::Client,
}

impl fmt::Debug for KubeWriteApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KubeWriteApi")
    }
}

impl KubeWriteApi {
    /// Writes through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    fn api(&self, res: &Resource, ns: &str) -> Api<DynamicObject> {
        if res.namespaced {
            Api::namespaced_with(self.client.clone(), ns, &res.api)
        } else {
            Api::all_with(self.client.clone(), &res.api)
        }
    }
}

fn to_value(o: DynamicObject) -> Result<Value, ApiError> {
    serde_json::to_value(o).map_err(ApiError::Body)
}

impl WriteApi for KubeWriteApi {
    fn create<'a>(
        &'a self,
        res: &'a Resource,
        ns: &'a str,
        body: Value,
    ) -> BoxFut<'a, Result<Value, ApiError>> {
        Box::pin(async move {
            let obj: DynamicObject = serde_json::from_value(body).map_err(ApiError::Body)?;
            to_value(
                self.api(res, ns)
                    .create(&PostParams::default(), &obj)
                    .await?,
            )
        })
    }

    fn patch<'a>(
        &'a self,
        res: &'a Resource,
        ns: &'a str,
        name: &'a str,
        patch: Value,
        status: bool,
    ) -> BoxFut<'a, Result<Value, ApiError>> {
        Box::pin(async move {
            let api = self.api(res, ns);
            let pp = PatchParams::default();
            let p = Patch::Merge(&patch);
            let o = if status {
                api.patch_status(name, &pp, &p).await?
            } else {
                api.patch(name, &pp, &p).await?
            };
            to_value(o)
        })
    }

    fn delete<'a>(
        &'a self,
        res: &'a Resource,
        ns: &'a str,
        name: &'a str,
        uid: &'a str,
    ) -> BoxFut<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.to_string()),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            self.api(res, ns).delete(name, &dp).await?;
            Ok(())
        })
    }
}
