//! Leader election with a coordination.k8s.io Lease, so two replicas are
//! safe: only the holder reconciles. A replica that loses the lease exits
//! (its pod restarts as a standby), as controller-runtime's managers do.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;

pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
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
            metadata: ObjectMeta { name: Some(config.name.clone()), namespace: Some(config.namespace.clone()), ..Default::default() },
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

/// Wait until this replica holds the lease, then keep renewing it in the
/// background. The returned receiver fires if the lease is lost.
pub async fn acquire(client: Client, config: LeaseConfig) -> tokio::sync::oneshot::Receiver<()> {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let retry = config.duration / 3;
    loop {
        match try_acquire(&api, &config).await {
            Ok(Attempt::Acquired) => break,
            Ok(Attempt::HeldByOther(holder)) => tracing::info!(%holder, lease = %config.name, "standing by: lease held by another replica"),
            Err(e) => tracing::warn!(lease = %config.name, "lease acquisition failed: {e}"),
        }
        tokio::time::sleep(retry).await;
    }
    tracing::info!(identity = %config.identity, lease = %config.name, "acquired leadership");
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(retry).await;
            match try_acquire(&api, &config).await {
                Ok(Attempt::Acquired) => last_renewed = tokio::time::Instant::now(),
                Ok(Attempt::HeldByOther(holder)) => {
                    tracing::error!(%holder, "lease taken over by another replica");
                    break;
                }
                Err(e) => {
                    tracing::warn!("lease renewal failed: {e}");
                    if last_renewed.elapsed() >= config.duration {
                        tracing::error!("could not renew the lease within its duration");
                        break;
                    }
                }
            }
        }
        let _ = lost_tx.send(());
    });
    lost_rx
}
