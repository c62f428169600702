//! The async face of the beacon, for tokio users.
//!
//! Same beacon, same driver task on the shared runtime; only the receiving end
//! is `async`. [`Beacon`] here never blocks a thread, so it is what to use from
//! async code (the blocking [`crate::Beacon`] refuses to run inside a
//! current-thread runtime).
//!
//! # Example
//!
//! ```no_run
//! # // no_run: it broadcasts on the loopback interface and waits for peers.
//! use std::time::Duration;
//!
//! # async fn demo() -> beacon::Result<()> {
//! let (mut beacon, controller) = beacon::Beacon::builder(5483)
//!     .data(b"tcp://192.0.2.7:5483")
//!     .interfaces(["lo"])
//!     .build_async()?;
//! let msg = beacon.recv().await?;
//! println!("{} says {:?}", msg.from, msg.data);
//! controller.set_period(Duration::from_secs(5))?;
//! beacon.close().await;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::core::Stats;
use crate::driver::Shared;
use crate::{BeaconController, Error, Message, Result};

/// A running beacon, async face. Dropping it stops its task (without waiting);
/// [`close`](Self::close) stops it and waits until its sockets are closed.
#[derive(Debug)]
pub struct Beacon {
    pub(crate) rx: mpsc::Receiver<Message>,
    pub(crate) shutdown: Option<oneshot::Sender<()>>,
    pub(crate) task: Option<JoinHandle<()>>,
    pub(crate) shared: Arc<Shared>,
}

impl Beacon {
    /// Starts a beacon on every interface, like [`crate::Beacon::new`], with
    /// the async face. Does not need to be called from inside a runtime.
    ///
    /// # Errors
    ///
    /// As [`crate::BeaconBuilder::build`].
    ///
    /// ```no_run
    /// # // no_run: broadcasts on every interface.
    /// use std::time::Duration;
    /// let (beacon, _ctl) = beacon::aio::Beacon::new(5483, 8, b"hi", Duration::from_secs(1))?;
    /// # Ok::<(), beacon::Error>(())
    /// ```
    pub fn new<D: AsRef<[u8]>>(
        port: u16,
        id_bytes: usize,
        data: D,
        period: Duration,
    ) -> Result<(Beacon, BeaconController)> {
        crate::BeaconBuilder::new(port)
            .id_bytes(id_bytes)
            .data(data)
            .period(period)
            .build_async()
    }

    /// Waits for the next message from another beacon.
    ///
    /// # Errors
    ///
    /// Only if the beacon's task has stopped (it does not stop on network
    /// errors; this means it panicked, a bug).
    ///
    /// ```no_run
    /// # async fn f(b: &mut beacon::aio::Beacon) -> beacon::Result<()> {
    /// let msg = b.recv().await?;
    /// # Ok(()) }
    /// ```
    pub async fn recv(&mut self) -> Result<Message> {
        match self.rx.recv().await {
            Some(m) => Ok(m),
            None => Err(self.stopped_error()),
        }
    }

    /// Waits for the next message, copies its data into `buf` (replacing its
    /// contents) and returns the sender's address, like
    /// [`crate::Beacon::next_message`].
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    ///
    /// ```no_run
    /// # async fn f(b: &mut beacon::aio::Beacon) -> beacon::Result<()> {
    /// let mut buf = Vec::new();
    /// let from = b.next_message(&mut buf).await?;
    /// # Ok(()) }
    /// ```
    pub async fn next_message(&mut self, buf: &mut Vec<u8>) -> Result<SocketAddr> {
        let m = self.recv().await?;
        buf.clear();
        buf.extend_from_slice(&m.data);
        Ok(m.from)
    }

    /// The next message if one is queued, without waiting.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    ///
    /// ```no_run
    /// # fn f(b: &mut beacon::aio::Beacon) -> beacon::Result<()> {
    /// while let Some(msg) = b.try_recv()? {
    ///     println!("{}", msg.from);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_recv(&mut self) -> Result<Option<Message>> {
        match self.rx.try_recv() {
            Ok(m) => Ok(Some(m)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(self.stopped_error()),
        }
    }

    /// This beacon's id (random, fixed for its life).
    ///
    /// ```no_run
    /// # fn f(b: &beacon::aio::Beacon) {
    /// println!("id {:02x?}", b.id());
    /// # }
    /// ```
    pub fn id(&self) -> &[u8] {
        &self.shared.id
    }

    /// The UDP port it listens and sends on.
    ///
    /// ```no_run
    /// # fn f(b: &beacon::aio::Beacon) {
    /// assert_eq!(b.port(), 5483);
    /// # }
    /// ```
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// How many datagrams were dropped as malformed, truncated, oversized or
    /// foreign (see [`Stats::dropped`]).
    ///
    /// ```no_run
    /// # fn f(b: &beacon::aio::Beacon) {
    /// println!("{} bad datagrams so far", b.dropped());
    /// # }
    /// ```
    pub fn dropped(&self) -> u64 {
        self.shared.stats().dropped
    }

    /// All counters.
    ///
    /// ```no_run
    /// # fn f(b: &beacon::aio::Beacon) {
    /// let s = b.stats();
    /// println!("sent {} times, heard {} messages", s.sends, s.delivered);
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops the beacon and waits until its task has ended and its sockets
    /// are closed.
    ///
    /// ```no_run
    /// # async fn f(b: beacon::aio::Beacon) {
    /// b.close().await;
    /// # }
    /// ```
    pub async fn close(mut self) {
        if let Some(task) = self.stop()
            && let Err(e) = task.await
        {
            log::error!("beacon on port {}: task failed: {e}", self.shared.port);
        }
    }

    /// Signals the task to stop; returns its handle to wait on, once.
    pub(crate) fn stop(&mut self) -> Option<JoinHandle<()>> {
        self.shared.close();
        self.shutdown.take();
        self.task.take()
    }

    fn stopped_error(&self) -> Error {
        Error::Stopped {
            port: self.shared.port,
        }
    }
}

impl Drop for Beacon {
    fn drop(&mut self) {
        // The task sees the signal and ends on the runtime right after.
        let _ = self.stop();
    }
}
