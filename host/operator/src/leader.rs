//! Leader election with a coordination.k8s.io Lease, so two replicas are
//! safe: only the holder reconciles. A replica that loses the lease exits
//! (its pod restarts as a standby), as controller-runtime's managers do.
//!
//! Timing as controller-runtime's: a lease of `duration` (15 s), renewed
//! every third of it, and given up when no renewal succeeded within the
//! renew deadline (two thirds): before the lease expires and a standby may
//! take it, so two replicas never reconcile at once. Every request has its
//! own timeout, so a hung API server cannot hold a renewal past that
//! deadline.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

impl LeaseConfig {
    /// Time between attempts (to acquire, or to renew).
    fn retry_period(&self) -> Duration {
        self.duration / 3
    }

    /// The holder gives up when no renewal succeeded for this long.
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// Why a holder stopped holding the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    TakenOver {
        holder: String,
    },
    /// No renewal succeeded within the renew deadline (errors or hung
    /// requests): the lease may be taken soon, so stop first.
    RenewDeadline,
}

enum Attempt {
    Acquired,
    HeldByOther(String),
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

async fn try_acquire(api: &Api<Lease>, config: &LeaseConfig) -> Result<Attempt, kube::Error> {
    let duration_secs = config.duration.as_secs() as i32;
    let current = api.get_opt(&config.name).await?;
    let Some(mut lease) = current else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        api.create(&PostParams::default(), &lease).await?;
        return Ok(Attempt::Acquired);
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
        let ttl = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(duration_secs)));
        renewed.0 + ttl < Timestamp::now()
    });
    if holder != config.identity && !holder.is_empty() && !expired {
        return Ok(Attempt::HeldByOther(holder));
    }
    let mut next = spec;
    if holder != config.identity {
        next.acquire_time = Some(now());
        next.lease_transitions = Some(next.lease_transitions.unwrap_or(0) + 1);
    }
    next.holder_identity = Some(config.identity.clone());
    next.lease_duration_seconds = Some(duration_secs);
    next.renew_time = Some(now());
    lease.spec = Some(next);
    // replace() carries the resourceVersion we read: a concurrent writer
    // makes this fail with 409 instead of both replicas winning.
    api.replace(&config.name, &PostParams::default(), &lease).await?;
    Ok(Attempt::Acquired)
}

/// Why one attempt at the lease failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
}

/// One attempt, bounded by `budget`: a request that does not answer in
/// time counts as a failure.
async fn attempt(api: &Api<Lease>, config: &LeaseConfig, budget: Duration) -> Result<Attempt, AttemptError> {
    match tokio::time::timeout(budget, try_acquire(api, config)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(AttemptError::NoAnswer(budget)),
    }
}

/// Wait until this replica holds the lease, then keep renewing it in the
/// background. The returned receiver fires if the lease is lost.
pub async fn acquire(client: Client, config: LeaseConfig) -> tokio::sync::oneshot::Receiver<()> {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    loop {
        match attempt(&api, &config, config.retry_period()).await {
            Ok(Attempt::Acquired) => break,
            Ok(Attempt::HeldByOther(holder)) => {
                tracing::info!(%holder, lease = %config.name, "standing by: lease held by another replica")
            }
            Err(e) => tracing::warn!(lease = %config.name, "lease acquisition failed: {e}"),
        }
        tokio::time::sleep(config.retry_period()).await;
    }
    tracing::info!(identity = %config.identity, lease = %config.name, "acquired leadership");
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let lost = hold(&api, &config).await;
        tracing::error!(lease = %config.name, ?lost, "leadership lost");
        let _ = lost_tx.send(());
    });
    lost_rx
}

/// Renew the lease until it is lost; returns why.
pub async fn hold(api: &Api<Lease>, config: &LeaseConfig) -> Lost {
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(config.retry_period()).await;
        let Some(left) = config.renew_deadline().checked_sub(last_renewed.elapsed()).filter(|d| !d.is_zero()) else {
            return Lost::RenewDeadline;
        };
        match attempt(api, config, left).await {
            Ok(Attempt::Acquired) => last_renewed = tokio::time::Instant::now(),
            Ok(Attempt::HeldByOther(holder)) => return Lost::TakenOver { holder },
            Err(e) => {
                tracing::warn!(lease = %config.name, "lease renewal failed: {e}");
                if last_renewed.elapsed() >= config.renew_deadline() {
                    return Lost::RenewDeadline;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API server that accepts connections and never answers: the
    /// holder must give up by its renew deadline instead of hanging in the
    /// request while a standby takes the expired lease.
    #[tokio::test]
    async fn a_holder_whose_renewals_hang_gives_up_at_the_renew_deadline() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url: http::Uri = format!("http://{}", silent.local_addr().unwrap()).parse().unwrap();
        let client = Client::try_from(kube::Config::new(url)).unwrap();
        let api: Api<Lease> = Api::namespaced(client, "ns");
        let config = LeaseConfig {
            namespace: "ns".into(),
            name: "lease".into(),
            identity: "me".into(),
            duration: Duration::from_millis(1500),
        };
        let started = std::time::Instant::now();
        let lost = tokio::time::timeout(Duration::from_secs(60), hold(&api, &config)).await.expect("hold returns");
        assert_eq!(lost, Lost::RenewDeadline);
        eprintln!(
            "gave up after {:.2?} (renew deadline {:?}, lease {:?})",
            started.elapsed(),
            config.renew_deadline(),
            config.duration
        );
        drop(silent);
    }

    #[test]
    fn the_renew_deadline_comes_before_the_lease_expires() {
        let config = LeaseConfig {
            namespace: String::new(),
            name: String::new(),
            identity: String::new(),
            duration: Duration::from_secs(15),
        };
        assert_eq!((config.retry_period(), config.renew_deadline()), (Duration::from_secs(5), Duration::from_secs(10)));
    }
}
