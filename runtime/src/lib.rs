//! The one tokio runtime that every crust crate runs its background work on.
//!
//! crust's public API is made of blocking calls, like `std::net`, but the work
//! behind them (accepting, handshakes, beacons, hole punching, heartbeats) runs
//! as *green threads*: tasks on a single multi-thread tokio runtime shared by the
//! whole process. This crate owns that runtime.
//!
//! - The runtime is created on first use and lives for the rest of the process.
//!   Its worker threads always run, so background work goes on between a user's
//!   calls. Their number is fixed (see [`worker_threads`]) and never grows with
//!   the number of services, listeners or connections.
//! - [`block_on`] is how a blocking facade waits for a future. It refuses,
//!   with a clear [`io::Error`], to be called from a current-thread runtime (where
//!   blocking would deadlock), and uses [`tokio::task::block_in_place`] when
//!   called from a worker of a multi-thread runtime, so a blocking call made
//!   from async code never panics with tokio's "cannot start a runtime from
//!   within a runtime".
//!
//! # Example
//!
//! ```
//! let answer = crust_runtime::block_on(async { 40 + 2 }).unwrap();
//! assert_eq!(answer, 42);
//! ```

#![deny(missing_docs)]
#![warn(unreachable_pub)]

use std::future::Future;
use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime, RuntimeFlavor};

/// Environment variable that overrides the number of worker threads.
pub const WORKER_THREADS_ENV: &str = "CRUST_WORKER_THREADS";

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The number of worker threads the shared runtime runs: the value of
/// `CRUST_WORKER_THREADS` if set to a number from 1 to 64, otherwise the
/// number of CPUs clamped to 2..=4.
pub fn worker_threads() -> usize {
    if let Some(n) = std::env::var(WORKER_THREADS_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
    {
        return n;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 4)
}

/// A handle to the shared runtime, creating it on first use.
///
/// Spawn background tasks with `handle().spawn(...)`.
///
/// # Panics
///
/// Panics only if the operating system refuses to start the runtime's worker
/// threads at first use (out of threads or memory): no crust call can work
/// without them.
pub fn handle() -> &'static Handle {
    RUNTIME
        .get_or_init(|| {
            let threads = worker_threads();
            log::debug!("starting the shared crust runtime with {threads} worker threads");
            Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("crust-worker")
                .enable_all()
                .build()
                // Invariant: without a runtime no part of crust can run; this
                // only fails when the OS cannot create threads.
                .expect("cannot start the shared crust runtime")
        })
        .handle()
}

/// Whether the calling thread may block: `Err` when it is a thread of a
/// current-thread tokio runtime, where blocking would stall every task.
///
/// `what` names the blocking call, for the error message.
pub fn check_blocking_allowed(what: &str) -> io::Result<()> {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::CurrentThread => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{what} is a blocking call and was made from inside a current-thread tokio \
                 runtime, where it would stall every task: use the `aio` API of this crate instead"
            ),
        )),
        _ => Ok(()),
    }
}

/// Runs `future` to completion on the shared runtime, blocking the calling
/// thread until it is done.
///
/// From an ordinary thread the caller drives the future itself while the
/// runtime's workers drive the I/O. From a worker of a multi-thread tokio
/// runtime it moves the worker's other tasks away first
/// ([`tokio::task::block_in_place`]). From a current-thread runtime it returns
/// an [`io::ErrorKind::Unsupported`] error naming the `aio` alternative.
pub fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
    check_blocking_allowed("this crust call")?;
    let rt = handle();
    if Handle::try_current().is_ok() {
        Ok(tokio::task::block_in_place(|| rt.block_on(future)))
    } else {
        Ok(rt.block_on(future))
    }
}

/// Runs the blocking closure `f` on the calling thread, after checking that
/// the thread may block (see [`check_blocking_allowed`]). On a worker of a
/// multi-thread runtime it moves the worker's other tasks away first.
///
/// `what` names the call, for the error message.
pub fn blocking<R>(what: &str, f: impl FnOnce() -> R) -> io::Result<R> {
    check_blocking_allowed(what)?;
    if Handle::try_current().is_ok() {
        Ok(tokio::task::block_in_place(f))
    } else {
        Ok(f())
    }
}

/// Like [`block_on`], but gives up after `timeout` with an
/// [`io::ErrorKind::TimedOut`] error whose message names `what`.
///
/// `None` waits without limit.
pub fn block_on_timeout<F: Future>(
    what: &str,
    timeout: Option<Duration>,
    future: F,
) -> io::Result<F::Output> {
    match timeout {
        None => block_on(future),
        Some(t) => block_on(async move { tokio::time::timeout(t, future).await })?.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} timed out after {t:?}"),
            )
        }),
    }
}

/// Spawns a background task on the shared runtime.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    handle().spawn(future)
}

/// Completes `work` for a `Drop` implementation, the one way every crust
/// object that owns tasks or sockets closes them:
///
/// - from an ordinary thread it runs `work` to completion before returning
///   (bounded by `limit`, a hang guard; when it runs out the work goes on
///   on the runtime and a warning naming `what` is logged), so the caller
///   sees the sockets closed when `drop` returns;
/// - on a runtime thread (inside a task, or in a `block_on`) it never
///   blocks: it spawns `work` on the shared runtime, where it completes right
///   after.
///
/// `work` should already have been signalled to stop (a shutdown channel,
/// a closed flag): it is the part that waits for the end.
pub fn finish_in_drop<F>(what: &str, limit: Option<Duration>, work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if Handle::try_current().is_ok() {
        spawn(work);
        return;
    }
    let work = spawn(work);
    let waited = match limit {
        None => handle().block_on(async move { work.await.is_ok() }),
        Some(t) => handle()
            .block_on(async move { matches!(tokio::time::timeout(t, work).await, Ok(Ok(()))) }),
    };
    if !waited {
        log::warn!("{what}: did not finish within {limit:?} of being dropped; it ends on its own");
    }
}

/// The number of tasks alive on the shared runtime, for resource tests.
pub fn alive_tasks() -> usize {
    handle().metrics().num_alive_tasks()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_from_plain_thread() {
        assert_eq!(block_on(async { 7 }).unwrap(), 7);
    }

    #[test]
    fn block_on_timeout_times_out_with_name() {
        let err = block_on_timeout(
            "waiting for nothing",
            Some(Duration::from_millis(20)),
            std::future::pending::<()>(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("waiting for nothing"), "{err}");
    }

    #[test]
    fn block_on_inside_current_thread_runtime_is_a_clear_error() {
        let rt = Builder::new_current_thread().enable_all().build().unwrap();
        let err = rt.block_on(async { block_on(async { 1 }) }).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        assert!(err.to_string().contains("aio"), "{err}");
    }

    #[test]
    fn block_on_inside_multi_thread_runtime_works() {
        let rt = Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let v = rt.block_on(async { tokio::spawn(async { block_on(async { 5 }) }).await });
        assert_eq!(v.unwrap().unwrap(), 5);
    }

    #[test]
    fn finish_in_drop_waits_from_a_thread_and_never_blocks_a_runtime() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        finish_in_drop("test work", None, async move {
            tokio::task::yield_now().await;
            d.store(true, Ordering::SeqCst);
        });
        assert!(done.load(Ordering::SeqCst), "waited for the work");
        // From inside a runtime: returns before the work can run (it waits on
        // a signal that comes after), then the work completes.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        block_on(async move {
            finish_in_drop("test work", None, async move {
                let _ = rx.await;
                let _ = done_tx.send(());
            });
            let _ = tx.send(());
        })
        .unwrap();
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the spawned work completes");
    }

    #[test]
    fn worker_threads_is_bounded() {
        let n = worker_threads();
        assert!((1..=64).contains(&n));
    }
}
