//! Decisions from measurements, with no IO and time passed in: the autoscaler, router
//! weights, and reading the few Prometheus series they need from worker `/metrics`.

pub mod autoscale;
pub mod load;
pub mod prom;
pub mod router_stats;
pub mod weights;
