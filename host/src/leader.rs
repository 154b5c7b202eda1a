//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics.
//!
//! Several `capstan run` replicas may run against one cluster; only the holder of the Lease
//! runs controllers. Standbys keep their caches warm (the manager syncs caches before it
//! campaigns), so a failover costs at most one lease duration plus one retry period.
//!
//! The algorithm is client-go's `tools/leaderelection` (what controller-runtime uses), with
//! its defaults: lease duration 15 s, renew deadline 10 s, retry period 2 s.
//!
//! - **Acquire**: every retry period (with up to 20% jitter), read the Lease. It is free when
//!   it has no holder, or when its record has not changed for a lease duration *as measured
//!   by this process's monotonic clock* since this process first saw that record. Remote
//!   timestamps (`renewTime`) are written for humans and other tools but never compared with
//!   the local clock, so clock skew between nodes cannot hand the lease to two holders.
//! - **Write**: create the Lease when absent, else replace it with the `resourceVersion`
//!   just read (optimistic concurrency: of two candidates, the API server accepts one and
//!   answers 409 to the other). `leaseTransitions` counts changes of holder.
//! - **Renew**: the leader renews every retry period. When no renewal has succeeded for the
//!   renew deadline (API server unreachable, the Lease taken), leadership is lost: the
//!   manager stops reconciling and `capstan run` exits non-zero, as controller-runtime does,
//!   so that a restarted process campaigns afresh with clean state.
//! - **Release**: on a clean shutdown the leader clears the holder so a standby takes over
//!   at its next retry instead of waiting out the lease (controller-runtime's
//!   `LeaderElectionReleaseOnCancel`; safe here because the manager releases only after its
//!   controllers have drained).
//!
//! Why not a crate: kube-leader-election is still on kube 4. kube-lease-manager 0.13 is on
//! kube 5 but (a) decides expiry by comparing the holder's written `renewTime` with the local
//! wall clock, which clock skew between nodes breaks, (b) keeps reporting leadership while
//! renewals fail (its watch loop logs the error and retries, without a renew deadline), and
//! (c) uses `std::time::SystemTime`, which paused-time tests cannot drive. Each of these is
//! a split-brain or testability problem for a controller manager; the algorithm is ~200
//! lines over the Lease API.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The durations are inconsistent (client-go's checks).
    #[error("invalid leader election settings: {0}")]
    Config(String),
    /// Leadership was lost: no renewal succeeded within the renew deadline.
    #[error("leader election lost: lease {namespace}/{name} not renewed within {deadline:?}")]
    Lost {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
        /// The renew deadline.
        deadline: Duration,
    },
}

/// Leader election settings (controller-runtime's names and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This candidate's identity, unique among replicas (`<hostname>_<random>`).
    pub identity: String,
    /// How long a Lease stays held without renewal before others may take it.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership.
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// Settings with controller-runtime's default durations (15 s, 10 s, 2 s).
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// client-go's consistency checks: lease duration > renew deadline > 1.2 x retry period.
    pub fn validate(&self) -> Result<(), LeaderError> {
        if self.identity.is_empty() || self.name.is_empty() || self.namespace.is_empty() {
            return Err(LeaderError::Config(
                "lease name, namespace and identity must not be empty".into(),
            ));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(LeaderError::Config(format!(
                "lease duration {:?} must be greater than renew deadline {:?}",
                self.lease_duration, self.renew_deadline
            )));
        }
        if self.renew_deadline <= self.retry_period.mul_f64(1.2) {
            return Err(LeaderError::Config(format!(
                "renew deadline {:?} must be greater than 1.2 x retry period {:?}",
                self.renew_deadline, self.retry_period
            )));
        }
        if self.lease_duration.as_secs() < 1 {
            return Err(LeaderError::Config(
                "lease duration must be at least 1 s (the Lease stores whole seconds)".into(),
            ));
        }
        Ok(())
    }
}

/// A default identity: `<hostname>_<random hex>`, as client-go builds `<hostname>_<uuid>`.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "capstan".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Not a secret: unique among replicas is all it must be.
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    format!("{host}_{mixed:016x}")
}

/// One candidate for a Lease.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    /// The Lease spec last seen and when (local monotonic clock) it was first seen.
    observed: Option<(LeaseSpec, Instant)>,
}

impl Elector {
    /// A candidate using `client`; fails on inconsistent settings.
    pub fn new(client: kube::Client, config: LeaderElectionConfig) -> Result<Self, LeaderError> {
        config.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &LeaderElectionConfig {
        &self.config
    }

    /// Campaign until this candidate holds the Lease (`true`) or `stop` fires (`false`).
    pub async fn acquire(&mut self, stop: &CancellationToken) -> bool {
        tracing::info!(lease = %self.lease_ref(), identity = %self.config.identity, "attempting to acquire leader lease");
        loop {
            if self.try_acquire_or_renew().await {
                tracing::info!(lease = %self.lease_ref(), identity = %self.config.identity, "successfully acquired lease");
                return true;
            }
            let pause = jittered(self.config.retry_period);
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Renew every retry period while leading. Returns `Ok(())` when `stop` fires (after
    /// releasing the Lease) and [`LeaderError::Lost`] when no renewal succeeded within the
    /// renew deadline.
    pub async fn hold(mut self, stop: CancellationToken) -> Result<(), LeaderError> {
        let mut last_renew = Instant::now();
        loop {
            let renewed = tokio::select! {
                _ = stop.cancelled() => None,
                ok = async {
                    tokio::time::sleep(self.config.retry_period).await;
                    // An attempt may not outlive the renew deadline (a hung request).
                    let left = self.config.renew_deadline.saturating_sub(last_renew.elapsed());
                    if left.is_zero() {
                        return false;
                    }
                    tokio::time::timeout(left, self.try_acquire_or_renew())
                        .await
                        .unwrap_or(false)
                } => Some(ok),
            };
            let Some(renewed) = renewed else {
                self.release().await;
                return Ok(());
            };
            if renewed {
                last_renew = Instant::now();
            } else if last_renew.elapsed() >= self.config.renew_deadline {
                tracing::error!(lease = %self.lease_ref(), identity = %self.config.identity, "failed to renew lease within the renew deadline; leadership lost");
                return Err(LeaderError::Lost {
                    namespace: self.config.namespace.clone(),
                    name: self.config.name.clone(),
                    deadline: self.config.renew_deadline,
                });
            } else {
                tracing::warn!(lease = %self.lease_ref(), "lease renewal failed; retrying");
            }
        }
    }

    fn lease_ref(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    fn record(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let duration = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        match previous {
            Some(p) if p.holder_identity.as_deref() == Some(self.config.identity.as_str()) => {
                LeaseSpec {
                    renew_time: Some(now),
                    lease_duration_seconds: Some(duration),
                    ..p.clone()
                }
            }
            _ => LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(
                    previous
                        .map(|p| {
                            let t = p.lease_transitions.unwrap_or(0);
                            if p.holder_identity.as_deref().is_some_and(|h| !h.is_empty()) {
                                t.saturating_add(1)
                            } else {
                                t
                            }
                        })
                        .unwrap_or(0),
                ),
                ..LeaseSpec::default()
            },
        }
    }

    /// One attempt (client-go's `tryAcquireOrRenew`): `true` when this candidate holds the
    /// Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> bool {
        let current = match self.api.get_opt(&self.config.name).await {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(lease = %self.lease_ref(), %error, "reading the lease failed");
                return false;
            }
        };
        let Some(lease) = current else {
            let spec = self.record(None);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec.clone()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.observed = Some((spec, Instant::now()));
                    true
                }
                Err(error) => {
                    tracing::debug!(lease = %self.lease_ref(), %error, "creating the lease failed");
                    false
                }
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(seen, _)| seen != &spec) {
            self.observed = Some((spec.clone(), Instant::now()));
        }
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let held_by_me = holder == self.config.identity;
        if !holder.is_empty() && !held_by_me {
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.config.lease_duration, Duration::from_secs);
            let seen_at = self
                .observed
                .as_ref()
                .map_or_else(Instant::now, |(_, t)| *t);
            if seen_at.elapsed() < duration {
                return false;
            }
        }
        let new = self.record(Some(&spec));
        let replacement = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(new.clone()),
        };
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &replacement)
            .await
        {
            Ok(_) => {
                self.observed = Some((new, Instant::now()));
                true
            }
            Err(error) => {
                tracing::debug!(lease = %self.lease_ref(), %error, "updating the lease failed");
                false
            }
        }
    }

    /// Give the Lease up if this candidate still holds it (best effort, one attempt).
    async fn release(&mut self) {
        let Ok(Some(lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        let now = MicroTime(Timestamp::now());
        let released = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..spec
            }),
        };
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &released)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.lease_ref(), "released leader lease"),
            Err(error) => {
                tracing::warn!(lease = %self.lease_ref(), %error, "releasing the lease failed")
            }
        }
    }
}

/// `d` plus up to 20% (client-go's `wait.Jitter(retryPeriod, 1.2)`).
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d.mul_f64(1.0 + 0.2 * f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_runtime_defaults_are_valid_and_bad_settings_are_refused() {
        let c = LeaderElectionConfig::new("l", "ns", "me");
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.retry_period, Duration::from_secs(2));
        c.validate().expect("defaults are valid");
        let mut bad = c.clone();
        bad.renew_deadline = Duration::from_secs(15);
        assert!(
            bad.validate().is_err(),
            "lease duration must exceed renew deadline"
        );
        let mut bad = c.clone();
        bad.retry_period = Duration::from_secs(9);
        assert!(
            bad.validate().is_err(),
            "renew deadline must exceed 1.2 x retry"
        );
        let mut bad = c;
        bad.identity.clear();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(2));
            assert!(j >= Duration::from_secs(2) && j <= Duration::from_millis(2400));
        }
    }

    #[test]
    fn identities_name_the_host() {
        let id = default_identity();
        assert!(id.contains('_'), "{id}");
    }
}
