//! Status from what the cluster shows: conditions with reasons a person can act on, replica
//! counts, and which workers to replace. Pure functions of observed objects and a clock.

pub mod cache;
pub mod engine;
pub mod events;
pub mod pods;
pub mod router;
