//! The async face: tokio drivers for the sans-IO cores. The blocking API of
//! the crate root is a thin layer over these, run on the shared
//! `crust-runtime`.
//!
//! The futures here run on whichever runtime awaits them; anything that
//! outlives a call (the [`StunServer`]'s tasks, UPnP lease renewals) is
//! spawned on the shared runtime, so it goes on between calls and after the
//! caller's runtime ends.
//!
//! Every network wait here is bounded by a configured timeout.

use std::io;
use std::time::Instant;

use tokio::net::UdpSocket;

use crate::driver::ignorable;
use crate::punch::{Classified, PunchConfig, PunchCore, Punched};
use crate::rendezvous::{PrivRendezvousInfo, PubRendezvousInfo};
use crate::{Error, Result};

pub use crate::driver::mapping::*;
pub use crate::driver::stun::*;
pub use crate::tcp_punch::aio::*;

/// Punches a hole from `socket` to the peer (see [`crate::punch`]).
///
/// Probes are consumed. A datagram that is not a probe, from the peer once
/// its probe arrived, means the peer finished and sent data: we finish too
/// and leave that datagram in the socket for the caller. Other datagrams
/// are dropped while punching.
pub async fn punch_hole(
    socket: &UdpSocket,
    ours: &PrivRendezvousInfo,
    theirs: &PubRendezvousInfo,
    cfg: &PunchConfig,
) -> Result<Punched> {
    let mut core = PunchCore::new(ours.clone(), theirs.clone(), cfg.clone(), Instant::now());
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        while let Some((to, bytes)) = core.poll_transmit(now) {
            if let Err(e) = socket.send_to(&bytes, to).await {
                // An unreachable endpoint (another family, no route) must
                // not end the attempt: the others may work.
                log::debug!("punch: cannot send to {to}: {e}");
            }
        }
        core.handle_timeout(now);
        if let Some(o) = core.outcome() {
            return o.clone().map_err(Error::CannotPunch);
        }
        let Some(deadline) = core.poll_timeout() else {
            return Err(Error::from(io::Error::other(
                "punch stopped without an outcome",
            )));
        };
        tokio::select! {
            r = socket.peek_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let now = Instant::now();
                    if core.classify(&buf[..n]) == Classified::Other
                        && core.handle_peer_data(from, now)
                    {
                        continue; // left in the socket for the caller
                    }
                    match socket.recv_from(&mut buf).await {
                        Ok((n, from)) => {
                            core.handle_datagram(&buf[..n], from, now);
                        }
                        Err(e) if ignorable(&e) => {}
                        Err(e) => return Err(Error::from(e)),
                    }
                }
                Err(e) if ignorable(&e) => {
                    // Clear the pending error by reading it.
                    let _ = socket.try_recv_from(&mut buf);
                }
                Err(e) => return Err(Error::from(e)),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}
