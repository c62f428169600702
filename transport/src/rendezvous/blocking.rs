//! The blocking face of [`super::aio::PreparedRendezvous`], on the shared
//! runtime.

use std::time::Duration;

use nat_traversal::{MappingContext, PubRendezvousInfo};

use super::aio::PreparedRendezvous;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::stream::Stream;

/// A prepared rendezvous, blocking (see the [module docs](super)).
///
/// ```no_run
/// use transport::{Identity, rendezvous::Rendezvous};
/// # fn send_to_peer(_: Vec<u8>) {}
/// # fn receive_from_peer() -> Vec<u8> { vec![] }
/// let mc = nat_traversal::MappingContext::new()?;
/// let prep = Rendezvous::prepare(&mc, &Identity::generate())?;
/// send_to_peer(prep.info().encode());
/// let theirs = nat_traversal::PubRendezvousInfo::decode(&receive_from_peer())?;
/// let stream = prep.connect(&theirs, transport::rendezvous::DEFAULT_TIMEOUT)?;
/// println!("connected {}", stream.path());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Rendezvous {
    inner: PreparedRendezvous,
}

impl Rendezvous {
    /// Maps one UDP and one TCP socket through `mc`
    /// ([`PreparedRendezvous::prepare`]).
    pub fn prepare(mc: &MappingContext, identity: &Identity) -> Result<Rendezvous> {
        let (mc, identity) = (mc.clone(), identity.clone());
        let inner =
            crust_runtime::block_on(
                async move { PreparedRendezvous::prepare(&mc, &identity).await },
            )
            .map_err(|e| Error::io("transport::rendezvous::Rendezvous::prepare", e))??;
        Ok(Rendezvous { inner })
    }

    pub(crate) fn from_aio(inner: PreparedRendezvous) -> Rendezvous {
        Rendezvous { inner }
    }

    /// Our rendezvous info, to send to the peer.
    pub fn info(&self) -> &PubRendezvousInfo {
        self.inner.info()
    }

    /// Races the attempts to the peer whose info is `theirs`
    /// ([`PreparedRendezvous::connect`]).
    pub fn connect(self, theirs: &PubRendezvousInfo, timeout: Duration) -> Result<Stream> {
        let theirs = theirs.clone();
        let prep = self.inner;
        let s = crust_runtime::block_on(async move { prep.connect(&theirs, timeout).await })
            .map_err(|e| Error::io("transport::rendezvous::Rendezvous::connect", e))??;
        Stream::from_aio(s).map_err(|e| Error::io("taking over a rendezvous stream", e))
    }
}
