//! Background upkeep: work repeated at an interval for as long as its owner lives.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `work` on `target` every `interval` until `shutdown` fires or `target` is dropped (the
/// task holds only a weak reference, so it never keeps its owner alive).
pub fn spawn_every<T, F, Fut>(
    target: &Arc<T>,
    interval: Duration,
    shutdown: CancellationToken,
    work: F,
) where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let target = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(target) = target.upgrade() else {
                return;
            };
            work(target).await;
        }
    });
}
