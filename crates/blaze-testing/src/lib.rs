//! What Blaze's tests share, whichever crate they test: polling until something a user would
//! wait for happens ([`until`], [`eventually`]), processes that end with the test
//! ([`Proc`]), free loopback ports, and the workspace's binaries ([`bin`]).

pub mod poll;
pub mod process;

pub use poll::{TimedOut, eventually, until, until_within};
pub use process::{Proc, bin, bin_dir, free_addr, free_port};
