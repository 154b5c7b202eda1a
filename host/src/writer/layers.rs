//! Tower layers around the kube client: client-side QPS/burst limiting and client-go's REST metrics.
//!
//! kube-client has no client-side rate limiter, so [`RateLimitLayer`] adds one (a GCRA
//! bucket from `governor`): every request waits for a token in `poll_ready`, before it is
//! handed to the client's stack. It limits the request rate, never concurrency, so
//! long-lived watches hold no permit. [`MetricsLayer`] counts
//! `rest_client_requests_total{code,method,host}` and observes
//! `rest_client_request_duration_seconds{verb,host}` per request. Retries of 429, 503 and
//! 504 honouring `Retry-After` are kube-client's own `RetryPolicy::server_retry` (on by
//! default in `kube::Config::default_retry`), which sits inside these layers.

use crate::metrics::Metrics;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{Request, Response};
use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service};

/// Limits requests to `qps` per second with bursts of `burst`.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RateLimitLayer")
    }
}

impl RateLimitLayer {
    /// A limiter of `qps` requests per second (fractions allowed) and `burst`; `None` when
    /// `qps` is not positive (limiting disabled, as client-go does for qps < 0).
    pub fn new(qps: f64, burst: u32) -> Option<Self> {
        if qps.is_nan() || qps <= 0.0 {
            return None;
        }
        let period = Duration::from_secs_f64(1.0 / qps).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::new(burst.max(1))?);
        Some(Self {
            limiter: Arc::new(RateLimiter::direct(quota)),
        })
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: Arc::clone(&self.limiter),
            sleep: None,
            permitted: false,
        }
    }
}

/// The service of [`RateLimitLayer`].
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<DefaultDirectRateLimiter>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    permitted: bool,
}

impl<S> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("permitted", &self.permitted)
            .finish_non_exhaustive()
    }
}

impl<S: Service<R>, R> Service<R> for RateLimit<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        while !self.permitted {
            if let Some(sleep) = self.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            match self.limiter.check() {
                Ok(()) => self.permitted = true,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.permitted = false;
        self.inner.call(req)
    }
}

/// Records client-go's REST metrics for every request.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
    host: Arc<str>,
}

impl MetricsLayer {
    /// Metrics for requests to `host` (host:port of the API server).
    pub fn new(metrics: Arc<Metrics>, host: &str) -> Self {
        Self {
            metrics,
            host: host.into(),
        }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = RestMetrics<S>;

    fn layer(&self, inner: S) -> RestMetrics<S> {
        RestMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`MetricsLayer`].
#[derive(Debug)]
pub struct RestMetrics<S> {
    inner: S,
    layer: MetricsLayer,
}

impl<S, B, RB> Service<Request<B>> for RestMetrics<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = req.method().to_string();
        let layer = self.layer.clone();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            let code = match &result {
                Ok(resp) => resp.status().as_u16().to_string(),
                Err(_) => "<error>".to_string(),
            };
            layer
                .metrics
                .rest_request(&code, &method, &layer.host, start.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_limiter_allows_the_burst_then_paces_requests() {
        let layer = RateLimitLayer::new(50.0, 5).unwrap();
        let mut svc = layer.layer(tower::service_fn(|_: ()| async { Ok::<_, Infallible>(()) }));
        let start = std::time::Instant::now();
        for _ in 0..5 {
            svc.ready().await.unwrap().call(()).await.unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_millis(15),
            "burst is immediate"
        );
        for _ in 0..5 {
            svc.ready().await.unwrap().call(()).await.unwrap();
        }
        // Five more at 50/s need about 100 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(80),
            "{:?}",
            start.elapsed()
        );
        assert!(RateLimitLayer::new(0.0, 1).is_none());
        assert!(RateLimitLayer::new(-1.0, 1).is_none());
    }
}
