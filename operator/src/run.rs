//! Wiring: leader election first; while leading, the Node and CipherlaneNode caches, the
//! RotationPolicy controller and the garbage collector; on shutdown, release the Lease.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cipherlane_k8s_api::k8s_openapi::api::core::v1::Node;
use cipherlane_k8s_api::kube::runtime::controller::{Config, Controller};
use cipherlane_k8s_api::kube::runtime::events::{Recorder, Reporter};
use cipherlane_k8s_api::kube::runtime::{reflector, watcher, WatchStreamExt};
use cipherlane_k8s_api::kube::{Api, Client};
use cipherlane_k8s_api::{CipherlaneNode, RotationPolicy};
use futures::{stream, StreamExt};
use tokio::sync::mpsc;

use crate::leader::{LeaderElector, Round};
use crate::{gc, policy_controller, Ctx, Error};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This replica's name in the Lease (pod name in a cluster).
    pub identity: String,
    pub lease_namespace: String,
    pub lease_name: String,
    /// A leader that has not renewed for this long is replaced.
    pub lease_duration: Duration,
    /// How often the garbage collector runs even without a watch event.
    pub gc_interval: Duration,
    /// Only AES-GCM suites are allowed: a policy asking for another is Degraded.
    pub fips: bool,
    /// Exported on `/metrics`; readiness and leadership are set here.
    pub metrics: Arc<crate::http::Metrics>,
}

/// Runs until `shutdown` resolves (then releases the Lease and returns `Ok`) or leadership is
/// lost (returns [`Error::LostLeadership`]; the process should exit so that it restarts as a
/// follower).
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let elector = LeaderElector::new(
        client.clone(),
        &settings.lease_namespace,
        &settings.lease_name,
        &settings.identity,
        settings.lease_duration,
    );
    let retry = settings.lease_duration / 3;
    tokio::pin!(shutdown);
    // Follow until we lead.
    loop {
        match elector.round().await {
            Ok(Round::Leading) => break,
            Ok(Round::Following { holder }) => {
                settings.metrics.ready.store(true, Ordering::Relaxed);
                tracing::info!(%holder, "following the leader");
            }
            Err(err) => tracing::warn!(error = %err, "leader election round failed"),
        }
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(retry) => {}
        }
    }
    settings.metrics.ready.store(true, Ordering::Relaxed);
    settings.metrics.leader.store(true, Ordering::Relaxed);
    tracing::info!(identity = %settings.identity, "became the leader");
    let renew = async {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(retry).await;
            match elector.round().await {
                Ok(Round::Leading) => last_ok = tokio::time::Instant::now(),
                Ok(Round::Following { holder }) => {
                    tracing::error!(%holder, "another replica holds the Lease");
                    return Error::LostLeadership(settings.lease_duration);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "renewing the Lease failed");
                    if last_ok.elapsed() >= settings.lease_duration {
                        return Error::LostLeadership(settings.lease_duration);
                    }
                }
            }
        }
    };
    let outcome = tokio::select! {
        () = &mut shutdown => Ok(()),
        err = renew => Err(err),
        res = operate(client, &settings) => res,
    };
    settings.metrics.leader.store(false, Ordering::Relaxed);
    if outcome.is_ok() {
        if let Err(err) = elector.release().await {
            tracing::warn!(error = %err, "releasing the Lease failed; the next leader waits for it to expire");
        } else {
            tracing::info!("released the Lease");
        }
    }
    outcome
}

fn trigger_stream(rx: mpsc::Receiver<()>) -> impl futures::Stream<Item = ()> + Send + 'static {
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

/// The leader's work. Returns only on a fatal error.
async fn operate(client: Client, settings: &Settings) -> Result<(), Error> {
    let (node_store, node_writer) = reflector::store::<Node>();
    let (cn_store, cn_writer) = reflector::store::<CipherlaneNode>();
    let nodes = watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .touched_objects()
        .map(|r| {
            r.map(|_| ()).map_err(|source| Error::Watch {
                what: "Nodes",
                source,
            })
        });
    let cns = watcher::watcher(
        Api::<CipherlaneNode>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(cn_writer)
    .touched_objects()
    .map(|r| {
        r.map(|_| ()).map_err(|source| Error::Watch {
            what: "CipherlaneNodes",
            source,
        })
    });
    // Every Node or CipherlaneNode change re-plans every policy and runs the collector;
    // capacity-1 channels coalesce bursts.
    let (policy_tx, policy_rx) = mpsc::channel::<()>(1);
    let (gc_tx, mut gc_rx) = mpsc::channel::<()>(1);
    let drive = async move {
        let mut both = stream::select(nodes.boxed(), cns.boxed());
        while let Some(item) = both.next().await {
            if let Err(err) = item {
                tracing::warn!(error = %err, "watch error; retrying");
                continue;
            }
            let _ = policy_tx.try_send(());
            let _ = gc_tx.try_send(());
        }
    };

    let controller = Controller::new(
        Api::<RotationPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(Config::default().debounce(Duration::from_millis(500)))
    .reconcile_all_on(trigger_stream(policy_rx));
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: crate::FIELD_MANAGER.into(),
                instance: Some(settings.identity.clone()),
            },
        ),
        nodes: node_store.clone(),
        cipherlane_nodes: cn_store.clone(),
        policies: controller.store(),
        metrics: settings.metrics.clone(),
        fips: settings.fips,
    });
    let gc_ctx = ctx.clone();
    let gc_interval = settings.gc_interval;
    let policies = async move {
        node_store
            .wait_until_ready()
            .await
            .map_err(|_| Error::CacheNotReady("Node"))?;
        cn_store
            .wait_until_ready()
            .await
            .map_err(|_| Error::CacheNotReady("CipherlaneNode"))?;
        tracing::info!("caches synced; reconciling policies and collecting garbage");
        let reconciles = controller
            .run(
                policy_controller::reconcile,
                policy_controller::error_policy,
                ctx,
            )
            .for_each(|res| async move {
                if let Err(err) = res {
                    tracing::debug!(error = %err, "controller event");
                }
            });
        let collector = async move {
            loop {
                if let Err(err) = gc::collect(&gc_ctx).await {
                    tracing::warn!(error = %err, "garbage collection failed");
                }
                tokio::select! {
                    _ = gc_rx.recv() => {}
                    () = tokio::time::sleep(gc_interval) => {}
                }
            }
        };
        tokio::join!(reconciles, collector);
        Ok::<(), Error>(())
    };
    tokio::select! {
        () = drive => Err(Error::CacheNotReady("watch streams ended")),
        res = policies => res,
    }
}
