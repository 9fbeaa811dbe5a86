//! Binding, serving and shutting down gracefully.

use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `listener` until `shutdown` fires, then stops accepting, closes streams and
/// gives in-flight requests up to `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let signalled = shutdown.clone();
    // Without TCP_NODELAY the last piece of a streamed (SSE) response waits for the client's
    // delayed ACK: ~40 ms added to every stateless call.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { signalled.cancelled().await });
    let server = tokio::spawn(async move { server.await });
    shutdown.cancelled().await;
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(std::io::Error::other(join)),
        Err(_) => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "in-flight requests did not finish in time; exiting"
            );
            Ok(())
        }
    }
}
