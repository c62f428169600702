//! Process-wide pools of I/O buffers, so an idle stream holds none.
//!
//! A stream takes a receive or send buffer when data flows and gives it back
//! as soon as the data is through (its socket has nothing more to read, its
//! records are all on the wire). Each pool keeps at most a few buffers for
//! the next stream that needs one; the rest go back to the allocator. So the
//! memory of 10,000 idle streams does not include 10,000 buffers, and busy
//! streams do not pay an allocation (nor its zeroing) per read.

use std::sync::Mutex;

/// A pool of byte buffers.
pub(crate) struct Pool {
    /// `Some(len)`: every buffer has exactly this length (a receive buffer,
    /// read into as a slice). `None`: buffers are empty `Vec`s whose
    /// capacity is kept (send buffers, appended to).
    len: Option<usize>,
    /// Buffers with more capacity than this are not kept.
    max_capacity: usize,
    /// How many buffers the pool keeps at most.
    keep: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    pub(crate) const fn fixed(len: usize, keep: usize) -> Pool {
        Pool {
            len: Some(len),
            max_capacity: len,
            keep,
            free: Mutex::new(Vec::new()),
        }
    }

    pub(crate) const fn growable(max_capacity: usize, keep: usize) -> Pool {
        Pool {
            len: None,
            max_capacity,
            keep,
            free: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // The list is always consistent: a panic cannot leave it half-updated.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer: of the pool's length (contents unspecified) for a fixed
    /// pool, empty for a growable one.
    pub(crate) fn take(&self) -> Vec<u8> {
        if let Some(v) = self.lock().pop() {
            return v;
        }
        match self.len {
            Some(len) => vec![0; len],
            None => Vec::new(),
        }
    }

    /// Gives `v` back: kept if it fits and the pool has room, else freed.
    pub(crate) fn give(&self, mut v: Vec<u8>) {
        if v.capacity() == 0 || v.capacity() > self.max_capacity {
            return;
        }
        match self.len {
            Some(len) if v.len() != len => return,
            Some(_) => {}
            None => v.clear(),
        }
        let mut free = self.lock();
        if free.len() < self.keep {
            free.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_number_of_fitting_buffers() {
        let p = Pool::fixed(16, 2);
        let a = p.take();
        assert_eq!(a.len(), 16);
        p.give(a);
        p.give(vec![1; 16]);
        p.give(vec![2; 16]);
        p.give(vec![3; 8]);
        assert_eq!(
            p.lock().len(),
            2,
            "at most `keep`, only of the pool's length"
        );
        let g = Pool::growable(64, 4);
        let mut v = g.take();
        v.extend_from_slice(&[1; 40]);
        g.give(v);
        g.give(Vec::with_capacity(1000));
        let v = g.take();
        assert!(v.is_empty() && v.capacity() >= 40);
        assert!(g.lock().is_empty(), "the oversized one was freed");
    }
}
