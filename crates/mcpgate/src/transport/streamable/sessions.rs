//! Stateful sessions that cost little while idle.
//!
//! rmcp keeps a running MCP service per session: the service's own task and two channels, plus the
//! session worker's task and five channels of `LocalSessionManager`. tokio allocates an mpsc
//! channel's slots 32 at a time whatever its capacity, and the message types are a few hundred
//! bytes, so an idle session held ~55-64 KiB (heaptrack: ~70% of it channel blocks, the rest task
//! cells), of which ~30 KiB is the service alone: no transport, however lean, gets under 16 KiB.
//!
//! So an idle session here *hibernates*: once quiet for [`HIBERNATE_AFTER`] (no open stream, no
//! request either way in flight, nothing sent or received), its service and worker are stopped and
//! only a small record is kept (the client's `initialize` parameters, for sessions not in a shared
//! store). Its next request brings it back through rmcp's own restore path: `has_session` says no,
//! rmcp loads the state from the [`SessionStore`] (this manager, or the shared store behind it),
//! asks [`SessionManager::restore_session`] for a fresh worker and replays the handshake. A
//! session is not hibernated while it holds state a revival would lose: an open stream (the
//! standalone GET stream included, so notifications keep flowing), requests in flight, pending
//! server-to-client requests, and resource subscriptions or a logging level (pinned for life).
//!
//! The record also carries the session's idle timeout: a session unused for `idle_timeout` ends,
//! live or hibernated (this replaces the worker's keep-alive, which a hibernated session lacks).
//! A session ends for good only through [`SessionStore::delete`] (rmcp's DELETE),
//! [`HibernatingSessions::end`] (revocation, a session ended on another instance) or that timeout;
//! `close_session` alone, which rmcp also calls after every service ends, only stops the service.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use rmcp::RoleServer;
use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ClientRequest, JsonRpcMessage, RequestId,
    ServerJsonRpcMessage,
};
use rmcp::transport::Transport;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError, SessionConfig,
};
use rmcp::transport::streamable_http_server::session::store::{
    SessionState, SessionStore, SessionStoreError,
};
use rmcp::transport::streamable_http_server::session::{
    RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};
use tokio::sync::Notify;

/// How long a session must be quiet before it hibernates. rmcp keeps a completed request's
/// stream cache this long too, for a client resuming a response stream it lost (clients retry
/// after the 3 s `retry` the stream announces), so hibernation never cuts a resume short.
pub const HIBERNATE_AFTER: Duration = Duration::from_secs(10);

/// How long a revival waits for the hibernating service to finish stopping.
const STOP_WAIT: Duration = Duration::from_secs(5);

type InnerTransport = <LocalSessionManager as SessionManager>::Transport;

/// rmcp's `LocalSessionManager` for the sessions that are awake, and a record per session.
pub struct HibernatingSessions {
    inner: LocalSessionManager,
    records: Mutex<HashMap<SessionId, Arc<Record>>>,
    /// The store of every instance, when shared: it holds the sessions' state, not the records.
    shared: Option<Arc<dyn SessionStore>>,
    hibernate_after: Duration,
    idle_timeout: Duration,
    epoch: Instant,
}

/// What a session costs while it sleeps.
struct Record {
    /// The client's `initialize` parameters, to replay on revival (without a shared store).
    state: Mutex<Option<Box<SessionState>>>,
    phase: Mutex<Phase>,
    /// Signalled when a stopping service has ended.
    stopped: Notify,
    open_streams: AtomicU32,
    /// Requests either way not yet answered. Empty (and unallocated) while idle.
    outstanding: Mutex<Vec<Outstanding>>,
    /// Milliseconds since the manager's epoch.
    last_active: AtomicU64,
    /// Holds state only its running service knows (subscriptions, a logging level).
    pinned: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Live,
    /// Asked to stop for hibernation; rmcp has not yet called `close_session` for it.
    Stopping,
    Hibernated,
}

#[derive(Debug, PartialEq, Eq)]
enum Outstanding {
    FromClient(RequestId),
    FromServer(RequestId),
}

/// What the sweeper does with a session.
enum Verdict {
    Keep,
    Hibernate,
    End,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Record {
    fn new(now: u64, state: Option<Box<SessionState>>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(state),
            phase: Mutex::new(Phase::Live),
            stopped: Notify::new(),
            open_streams: AtomicU32::new(0),
            outstanding: Mutex::default(),
            last_active: AtomicU64::new(now),
            pinned: AtomicBool::new(false),
        })
    }

    fn touch(&self, now: u64) {
        self.last_active.fetch_max(now, Ordering::Relaxed);
    }

    fn add(&self, entry: Outstanding) {
        lock(&self.outstanding).push(entry);
    }

    fn settle(&self, entry: &Outstanding) {
        let mut outstanding = lock(&self.outstanding);
        if let Some(at) = outstanding.iter().position(|e| e == entry) {
            outstanding.swap_remove(at);
        }
        if outstanding.is_empty() {
            // Give the allocation back: thousands of idle sessions each keeping one add up.
            *outstanding = Vec::new();
        }
    }

    /// A message from the client, on its way to the service.
    fn incoming(&self, message: &ClientJsonRpcMessage, now: u64) {
        self.touch(now);
        match message {
            JsonRpcMessage::Request(request) => {
                #[allow(deprecated)]
                if matches!(
                    request.request,
                    ClientRequest::SubscribeRequest(_) | ClientRequest::SetLevelRequest(_)
                ) {
                    self.pinned.store(true, Ordering::Relaxed);
                }
                self.add(Outstanding::FromClient(request.id.clone()));
            }
            JsonRpcMessage::Response(response) => {
                self.settle(&Outstanding::FromServer(response.id.clone()));
            }
            JsonRpcMessage::Error(error) => {
                if let Some(id) = &error.id {
                    self.settle(&Outstanding::FromServer(id.clone()));
                }
            }
            JsonRpcMessage::Notification(notification) => {
                if let ClientNotification::CancelledNotification(cancelled) =
                    &notification.notification
                    && let Some(id) = &cancelled.params.request_id
                {
                    self.settle(&Outstanding::FromClient(id.clone()));
                }
            }
        }
    }

    /// A message from the service, on its way to the client.
    fn outgoing(&self, message: &ServerJsonRpcMessage, now: u64) {
        self.touch(now);
        match message {
            JsonRpcMessage::Request(request) => {
                self.add(Outstanding::FromServer(request.id.clone()));
            }
            JsonRpcMessage::Response(response) => {
                self.settle(&Outstanding::FromClient(response.id.clone()));
            }
            JsonRpcMessage::Error(error) => {
                if let Some(id) = &error.id {
                    self.settle(&Outstanding::FromClient(id.clone()));
                }
            }
            JsonRpcMessage::Notification(_) => {}
        }
    }

    /// Decides, and marks a session to hibernate as stopping under the same lock `has_session`
    /// takes: a request that found the session awake has touched it, so it is not quiet.
    fn verdict(&self, now: u64, hibernate_after: u64, idle_timeout: u64) -> Verdict {
        let mut phase = lock(&self.phase);
        let idle_for = now.saturating_sub(self.last_active.load(Ordering::Relaxed));
        // Like the worker's keep-alive it replaces: unused that long ends a session even with a
        // request outstanding (a client gone without answering the server's would keep it).
        if idle_for >= idle_timeout {
            return Verdict::End;
        }
        let busy = !lock(&self.outstanding).is_empty();
        let quiet = *phase == Phase::Live
            && idle_for >= hibernate_after
            && !busy
            && self.open_streams.load(Ordering::Relaxed) == 0
            && !self.pinned.load(Ordering::Relaxed);
        if quiet {
            *phase = Phase::Stopping;
            Verdict::Hibernate
        } else {
            Verdict::Keep
        }
    }
}

impl HibernatingSessions {
    /// `config` is for the workers of awake sessions (its keep-alive is replaced by
    /// `idle_timeout`); `shared` is the store of every instance, if any.
    pub fn new(
        mut config: SessionConfig,
        idle_timeout: Duration,
        hibernate_after: Duration,
        shared: Option<Arc<dyn SessionStore>>,
    ) -> Self {
        config.keep_alive = None;
        config.completed_cache_ttl = config.completed_cache_ttl.min(hibernate_after);
        let mut inner = LocalSessionManager::default();
        inner.session_config = config;
        Self {
            inner,
            records: Mutex::default(),
            shared,
            hibernate_after,
            idle_timeout,
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn record(&self, id: &str) -> Option<Arc<Record>> {
        lock(&self.records).get(id).cloned()
    }

    /// Whether the session exists here, awake or hibernating.
    pub fn knows(&self, id: &str) -> bool {
        lock(&self.records).contains_key(id)
    }

    /// Sessions known here, and how many of them are awake (for tests and metrics).
    pub fn counts(&self) -> (usize, usize) {
        let records = lock(&self.records);
        let awake = records
            .values()
            .filter(|r| *lock(&r.phase) != Phase::Hibernated)
            .count();
        (records.len(), awake)
    }

    /// Ends a session here for good, awake or not.
    pub async fn end(&self, id: &SessionId) {
        let record = lock(&self.records).remove(id);
        if let Some(record) = record {
            record.stopped.notify_waiters();
        }
        if let Err(e) = self.inner.close_session(id).await {
            tracing::debug!(error = %e, "closing an ended session's worker failed");
        }
    }

    /// Hibernates quiet sessions and ends those idle past the timeout. Run periodically.
    pub async fn sweep(&self) {
        let now = self.now();
        let hibernate_after = u64::try_from(self.hibernate_after.as_millis()).unwrap_or(u64::MAX);
        let idle_timeout = u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let (mut hibernate, mut end) = (Vec::new(), Vec::new());
        for (id, record) in lock(&self.records).iter() {
            match record.verdict(now, hibernate_after, idle_timeout) {
                Verdict::Keep => {}
                Verdict::Hibernate => hibernate.push(id.clone()),
                Verdict::End => end.push(id.clone()),
            }
        }
        for id in hibernate {
            // The worker ends, then its service, then rmcp calls `close_session`, which
            // completes the hibernation.
            if let Err(e) = self.inner.close_session(&id).await {
                tracing::debug!(error = %e, "stopping a quiet session's worker failed");
            }
        }
        for id in end {
            tracing::debug!(session = %id, "session idle timeout");
            self.end(&id).await;
        }
    }

    fn track(&self, transport: InnerTransport, record: Arc<Record>) -> TrackedTransport {
        TrackedTransport {
            inner: transport,
            record,
            epoch: self.epoch,
        }
    }

    /// Counts a stream open before rmcp is asked for it, so the sweeper never sees the session
    /// quiet in between.
    fn open_stream(&self, id: &SessionId) -> Result<OpenStream, LocalSessionManagerError> {
        let record = self.record(id).ok_or_else(|| Self::not_found(id))?;
        record.open_streams.fetch_add(1, Ordering::Relaxed);
        record.touch(self.now());
        Ok(OpenStream {
            record,
            epoch: self.epoch,
        })
    }

    fn not_found(id: &SessionId) -> LocalSessionManagerError {
        LocalSessionManagerError::SessionNotFound(id.clone())
    }
}

impl SessionManager for HibernatingSessions {
    type Error = LocalSessionManagerError;
    type Transport = TrackedTransport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let (id, transport) = self.inner.create_session().await?;
        let record = Record::new(self.now(), None);
        lock(&self.records).insert(id.clone(), record.clone());
        Ok((id, self.track(transport, record)))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, message).await
    }

    /// Only awake sessions: for a hibernating one rmcp goes on to restore it.
    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        let Some(record) = self.record(id) else {
            return Ok(false);
        };
        {
            let phase = lock(&record.phase);
            if *phase != Phase::Live {
                return Ok(false);
            }
            // Under the phase lock: the sweeper sees this use before it decides.
            record.touch(self.now());
        }
        self.inner.has_session(id).await
    }

    /// Stops the session's service, keeping its record: called for a DELETE (which then deletes
    /// from the store, ending the session) and by rmcp after each service ends.
    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        if let Some(record) = self.record(id) {
            let was = std::mem::replace(&mut *lock(&record.phase), Phase::Hibernated);
            record.stopped.notify_waiters();
            if was == Phase::Stopping {
                // The hibernating service has ended; its worker was closed already (and a
                // revival waiting on it may now start a new one under the same id).
                return Ok(());
            }
            if lock(&record.state).is_none() && self.shared.is_none() {
                // Never initialized: there is nothing to revive.
                lock(&self.records).remove(id);
            }
        }
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let open = self.open_stream(id)?;
        let stream = self.inner.create_stream(id, message).await?;
        Ok(CountedStream {
            inner: Box::pin(stream),
            _open: open,
        })
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        if let Some(record) = self.record(id) {
            record.touch(self.now());
        }
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let open = self.open_stream(id)?;
        let stream = self.inner.create_standalone_stream(id).await?;
        Ok(CountedStream {
            inner: Box::pin(stream),
            _open: open,
        })
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let open = self.open_stream(id)?;
        let stream = self.inner.resume(id, last_event_id).await?;
        Ok(CountedStream {
            inner: Box::pin(stream),
            _open: open,
        })
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        let record = match self.record(&id) {
            Some(record) => record,
            // Opened on another instance (rmcp found it in the shared store).
            None if self.shared.is_some() => {
                let record = Record::new(self.now(), None);
                lock(&self.records)
                    .entry(id.clone())
                    .or_insert(record)
                    .clone()
            }
            None => return Ok(RestoreOutcome::NotSupported),
        };
        // A hibernating service still stopping: wait for rmcp's `close_session` after it, which
        // would otherwise close the new worker under the same id.
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        loop {
            let stopped = record.stopped.notified();
            if *lock(&record.phase) != Phase::Stopping {
                break;
            }
            if tokio::time::timeout_at(deadline, stopped).await.is_err() {
                tracing::warn!(session = %id, "a hibernating session's service did not stop");
                break;
            }
        }
        if !self.knows(&id) {
            // Ended while we waited.
            return Ok(RestoreOutcome::NotSupported);
        }
        {
            let mut phase = lock(&record.phase);
            *phase = Phase::Live;
            record.touch(self.now());
        }
        match self.inner.restore_session(id).await? {
            RestoreOutcome::Restored(transport) => {
                Ok(RestoreOutcome::Restored(self.track(transport, record)))
            }
            RestoreOutcome::AlreadyPresent => Ok(RestoreOutcome::AlreadyPresent),
            _ => Ok(RestoreOutcome::NotSupported),
        }
    }
}

/// The state rmcp replays to revive a session: ours, or the shared store's.
#[async_trait::async_trait]
impl SessionStore for HibernatingSessions {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        if let Some(shared) = &self.shared {
            return shared.load(session_id).await;
        }
        Ok(self
            .record(session_id)
            .and_then(|r| lock(&r.state).as_deref().cloned()))
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        if let Some(shared) = &self.shared {
            return shared.store(session_id, state).await;
        }
        if let Some(record) = self.record(session_id) {
            *lock(&record.state) = Some(Box::new(state.clone()));
        }
        Ok(())
    }

    /// A DELETE: the session is over.
    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.end(&SessionId::from(session_id)).await;
        if let Some(shared) = &self.shared {
            return shared.delete(session_id).await;
        }
        Ok(())
    }
}

/// The worker's transport, watching what passes to tell a quiet session from a busy one.
pub struct TrackedTransport {
    inner: InnerTransport,
    record: Arc<Record>,
    epoch: Instant,
}

impl TrackedTransport {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Transport<RoleServer> for TrackedTransport {
    type Error = <InnerTransport as Transport<RoleServer>>::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.record.outgoing(&item, self.now());
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        let message = self.inner.receive().await?;
        self.record.incoming(&message, self.now());
        Some(message)
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.inner.close().await
    }
}

/// A response or standalone stream, counted open while it lives.
struct CountedStream<S> {
    inner: Pin<Box<S>>,
    _open: OpenStream,
}

impl<S: Stream> Stream for CountedStream<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// One open stream of a session, from before it is asked for until it is dropped.
struct OpenStream {
    record: Arc<Record>,
    epoch: Instant,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.record.open_streams.fetch_sub(1, Ordering::Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.record.touch(now);
    }
}
