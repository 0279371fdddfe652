//! The parts of the `blaze` command line that its tests use too.

pub mod closed_loop;
