//! The group-commit writer of the SQLite store (see "Durability and group commit" in the parent
//! module): one thread owning one connection of its own (rusqlite, synchronous) runs every write
//! of a group, each in its own savepoint, inside one `BEGIN IMMEDIATE` transaction, commits once,
//! and only then answers. A group costs one hand-over to this thread and one answer per request.
//! (Through sqlx every statement was a round trip to the connection's worker thread, and those
//! thread switches, not SQLite, were most of what a token request cost.)

use std::path::PathBuf;
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use futures::channel::oneshot;
use rusqlite::{Connection, OpenFlags};

use crate::store::{StoreError, StoreResult};

/// Most writes one group commit carries (a bound on how long one transaction holds the lock).
const MAX_GROUP: usize = 64;
/// Statements the writer keeps prepared (the token endpoint's writes use about twenty).
const STATEMENT_CACHE: usize = 64;

/// The database the writer opens: the one the store's pool uses.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The database file, or for an in-memory database its shared-cache name.
    pub path: PathBuf,
    pub in_memory: bool,
    pub busy_timeout: Duration,
}

/// One write of a group: runs on the writer's connection inside the group's transaction.
/// `Err` rolls back this write alone. Must not block on anything but SQLite: the whole group
/// waits for it.
pub(super) type Work<T> = Box<dyn FnOnce(&Connection) -> StoreResult<T> + Send>;

/// The handle of the writer thread. The thread ends once the store is closed or every handle is
/// gone; if it died (a write panicked), the next write starts another.
pub(super) struct GroupWriter {
    target: Target,
    running: Mutex<Option<Running>>,
}

/// A started writer thread.
struct Running {
    queue: mpsc::Sender<Box<dyn GroupJob>>,
    /// Fires (or is dropped) when the thread has closed its connection.
    stopped: oneshot::Receiver<()>,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWriter")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl GroupWriter {
    /// Starts the writer thread and waits until its connection is open and sees the store's
    /// (migrated) database.
    pub(super) async fn start(target: Target) -> StoreResult<Self> {
        let (opened, open_result) = oneshot::channel();
        let running = spawn(target.clone(), Some(opened))?;
        open_result.await.map_err(|_| stopped())??;
        Ok(Self {
            target,
            running: Mutex::new(Some(running)),
        })
    }

    /// Runs `work` in the next group commit and returns its outcome once that is durable.
    pub(super) async fn run<T: Send + 'static>(&self, work: Work<T>) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        self.submit(Box::new(Job { work, reply }));
        answer.await.map_err(|_| stopped())?
    }

    /// Lets the writes queued so far finish, then closes the writer's connection; writes after
    /// this fail.
    pub(super) async fn close(&self) {
        let running = self.lock().take();
        if let Some(Running { queue, stopped }) = running {
            drop(queue);
            // Dropped instead of sent if the thread panicked: stopped either way.
            let _ = stopped.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        // A poisoned lock only means another caller panicked; the sender is still sound.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn submit(&self, job: Box<dyn GroupJob>) {
        let mut running = self.lock();
        let Some(current) = running.as_mut() else {
            job.fail(StoreError::Unavailable(
                "the SQLite store is closed".to_owned(),
            ));
            return;
        };
        let Err(mpsc::SendError(job)) = current.queue.send(job) else {
            return;
        };
        // The thread is gone: start another (it opens a fresh connection).
        match spawn(self.target.clone(), None) {
            Ok(restarted) => {
                *current = restarted;
                if let Err(mpsc::SendError(job)) = current.queue.send(job) {
                    job.fail(stopped());
                }
            }
            Err(e) => job.fail(e),
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the SQLite writer stopped before committing".to_owned())
}

fn spawn(target: Target, opened: Option<oneshot::Sender<StoreResult<()>>>) -> StoreResult<Running> {
    let (queue, jobs) = mpsc::channel();
    let (stopped_tx, stopped) = oneshot::channel();
    std::thread::Builder::new()
        .name("sqlite-writer".to_owned())
        .spawn(move || {
            let conn = match open(&target) {
                Ok(conn) => conn,
                Err(e) => {
                    // Jobs already queued are dropped with the receiver: "stopped" for them.
                    if let Some(opened) = opened {
                        let _ = opened.send(Err(e));
                    }
                    return;
                }
            };
            if let Some(opened) = opened {
                let _ = opened.send(Ok(()));
            }
            write_groups(&conn, &jobs);
            drop(conn);
            let _ = stopped_tx.send(());
        })
        .map_err(|e| StoreError::Unavailable(format!("starting the SQLite writer: {e}")))?;
    Ok(Running { queue, stopped })
}

/// Opens the writer's connection with the store's settings (see the parent module).
fn open(target: &Target) -> StoreResult<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if target.in_memory {
        // Joins the pool's in-memory database by name (sqlx opens it with a shared cache).
        flags |= OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_MEMORY
            | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
    }
    let conn = Connection::open_with_flags(&target.path, flags).map_err(sqlite_err)?;
    conn.busy_timeout(target.busy_timeout).map_err(sqlite_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sqlite_err)?;
    // FULL, not NORMAL: an answered write survives a power loss. (The journal mode, WAL, is a
    // property of the file, set by the pool.)
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite_err)?;
    // Each write runs in a savepoint, so SQLite keeps a statement journal (the pages' contents
    // before the savepoint) for the group's transaction; past 64 KiB it spills it to a temporary
    // file, which for a group of code exchanges was as many page writes as the WAL itself. In
    // memory it is freed at every commit, bounded by the pages one group touches.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(sqlite_err)?;
    // A private in-memory database (not shared by name) would open empty here: refuse it
    // rather than write where nobody reads.
    conn.query_row("SELECT count(*) FROM _sqlx_migrations", [], |_| Ok(()))
        .map_err(|e| {
            StoreError::Unavailable(format!(
                "the SQLite writer does not see the store's database at {} \
                 (an in-memory database must be opened as sqlite::memory:): {e}",
                target.path.display()
            ))
        })?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The thread's loop: ends when every sender is gone.
fn write_groups(conn: &Connection, jobs: &mpsc::Receiver<Box<dyn GroupJob>>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Ok(first) = jobs.recv() {
        group.push(first);
        // Everything queued while the previous group was committing joins this one.
        group.extend(jobs.try_iter().take(MAX_GROUP - 1));
        commit_group(conn, group.drain(..));
    }
}

fn commit_group(conn: &Connection, group: impl ExactSizeIterator<Item = Box<dyn GroupJob>>) {
    let mut jobs = group;
    if let Err(e) = execute(conn, "BEGIN IMMEDIATE") {
        for job in jobs {
            job.fail(e.clone());
        }
        return;
    }
    let mut ran = Vec::with_capacity(jobs.len());
    let mut broken = None;
    for job in jobs.by_ref() {
        if let Err(e) = execute(conn, "SAVEPOINT grouped") {
            job.fail(e.clone());
            broken = Some(e);
            break;
        }
        let reply = job.run(conn);
        let end = if reply.succeeded() {
            execute(conn, "RELEASE grouped")
        } else {
            execute(conn, "ROLLBACK TO grouped").and_then(|()| execute(conn, "RELEASE grouped"))
        };
        ran.push(reply);
        if let Err(e) = end {
            broken = Some(e);
            break;
        }
    }
    let commit = match broken {
        // The transaction's state is unknown: undo all of it.
        Some(e) => {
            for job in jobs {
                job.fail(e.clone());
            }
            rollback(conn);
            Err(e)
        }
        None => execute(conn, "COMMIT").inspect_err(|_| rollback(conn)),
    };
    for reply in ran {
        reply.send(&commit);
    }
}

/// Ends the transaction if SQLite has not already rolled it back on its own.
fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        // Nothing more to do if even this fails: closing the connection rolls back too, and
        // the next group's BEGIN reports the state.
        let _ = execute(conn, "ROLLBACK");
    }
}

fn execute(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(|_| ())
        .map_err(sqlite_err)
}

/// A queued write, its result type erased.
trait GroupJob: Send {
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Reply>;
    fn fail(self: Box<Self>, error: StoreError);
}

/// A write that has run, waiting for its group's commit to be answered.
trait Reply: Send {
    fn succeeded(&self) -> bool;
    fn send(self: Box<Self>, commit: &StoreResult<()>);
}

struct Job<T> {
    work: Work<T>,
    reply: oneshot::Sender<StoreResult<T>>,
}

struct Ran<T> {
    outcome: StoreResult<T>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T: Send + 'static> GroupJob for Job<T> {
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Reply> {
        let Job { work, reply } = *self;
        Box::new(Ran {
            outcome: work(conn),
            reply,
        })
    }

    fn fail(self: Box<Self>, error: StoreError) {
        // The requester may be gone (its client hung up): nobody left to tell.
        let _ = self.reply.send(Err(error));
    }
}

impl<T: Send + 'static> Reply for Ran<T> {
    fn succeeded(&self) -> bool {
        self.outcome.is_ok()
    }

    fn send(self: Box<Self>, commit: &StoreResult<()>) {
        let outcome = match (self.outcome, commit) {
            (Ok(value), Ok(())) => Ok(value),
            // Its writes were part of a group that did not commit: nothing happened.
            (Ok(_), Err(e)) => Err(e.clone()),
            (Err(e), _) => Err(e),
        };
        let _ = self.reply.send(outcome);
    }
}

/// Maps a rusqlite error as the parent's `store_err` maps sqlx's.
pub(super) fn sqlite_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    match &e {
        rusqlite::Error::SqliteFailure(failure, message) => {
            let message = message.clone().unwrap_or_else(|| failure.to_string());
            match failure.extended_code {
                ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                    StoreError::Conflict(message)
                }
                // A write naming a row that is not there is a conflict with the store's state.
                ffi::SQLITE_CONSTRAINT_FOREIGNKEY => {
                    StoreError::Conflict(format!("refers to a missing row: {message}"))
                }
                ffi::SQLITE_CONSTRAINT_NOTNULL | ffi::SQLITE_CONSTRAINT_CHECK => {
                    StoreError::Corrupt(message)
                }
                // Busy past the timeout, disk full, I/O errors, …
                _ => StoreError::Unavailable(message),
            }
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnIndex(_)
        | rusqlite::Error::InvalidColumnName(_)
        | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Like [`sqlite_err`], but a unique violation becomes a conflict naming `what`.
pub(super) fn conflict_or(
    what: impl FnOnce() -> String,
) -> impl FnOnce(rusqlite::Error) -> StoreError {
    use rusqlite::ffi;
    move |e| match &e {
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(
                failure.extended_code,
                ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ) =>
        {
            StoreError::Conflict(what())
        }
        _ => sqlite_err(e),
    }
}
