//! Loopback addresses for pods.
//!
//! Every pod gets its own address in 127.0.0.0/8 so that many pods can listen on the same
//! port, as they do on a real cluster. Linux routes the whole /8 to the loopback interface,
//! so no setup is needed.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Hands out loopback addresses; an address returns to the pool when its lease drops.
#[derive(Debug, Clone)]
pub struct AddressPool {
    inner: Arc<Mutex<PoolState>>,
}

#[derive(Debug)]
struct PoolState {
    first: u32,
    last: u32,
    next: u32,
    in_use: BTreeSet<u32>,
}

impl AddressPool {
    /// A pool over `first..=last`.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> Self {
        let (first, last) = (u32::from(first), u32::from(last));
        Self {
            inner: Arc::new(Mutex::new(PoolState {
                first,
                last,
                next: first,
                in_use: BTreeSet::new(),
            })),
        }
    }

    /// Takes the next free address. Addresses are handed out round-robin so a freed address
    /// is not reused at once (a late connection to an old pod should not reach a new one).
    pub fn allocate(&self) -> Result<AddressLease> {
        let mut state = self.inner.lock();
        let size = state.last - state.first + 1;
        for _ in 0..size {
            let candidate = state.next;
            state.next = if candidate >= state.last { state.first } else { candidate + 1 };
            if state.in_use.insert(candidate) {
                return Ok(AddressLease {
                    addr: Ipv4Addr::from(candidate),
                    pool: self.inner.clone(),
                });
            }
        }
        Err(Error::NoFreeAddress)
    }

    /// How many addresses are leased.
    pub fn in_use(&self) -> usize {
        self.inner.lock().in_use.len()
    }
}

impl Default for AddressPool {
    /// 127.0.1.1 to 127.0.255.254: clear of 127.0.0.1, which the control plane itself uses.
    fn default() -> Self {
        Self::new(Ipv4Addr::new(127, 0, 1, 1), Ipv4Addr::new(127, 0, 255, 254))
    }
}

/// One leased address; dropping it frees the address.
#[derive(Debug)]
pub struct AddressLease {
    addr: Ipv4Addr,
    pool: Arc<Mutex<PoolState>>,
}

impl AddressLease {
    /// The address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
}

impl Drop for AddressLease {
    fn drop(&mut self) {
        self.pool.lock().in_use.remove(&u32::from(self.addr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_addresses_and_reuses_freed_ones_last() {
        let pool = AddressPool::new(Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 4));
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        let c = pool.allocate().unwrap();
        assert_eq!(
            [a.addr(), b.addr(), c.addr()],
            [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::new(127, 0, 0, 4)]
        );
        assert!(matches!(pool.allocate(), Err(Error::NoFreeAddress)));
        drop(b);
        assert_eq!(pool.in_use(), 2);
        assert_eq!(pool.allocate().unwrap().addr(), Ipv4Addr::new(127, 0, 0, 3));
    }
}
