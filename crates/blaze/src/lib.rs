//! The `blaze` command line's library: the development control plane (`blaze dev`), which the
//! end-to-end scenarios drive too.

pub mod dev;
