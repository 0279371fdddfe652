//! What every Blaze binary sets up the same way.
//!
//! [`logs::init`] starts its logs: text or JSON lines on standard error, filtered by
//! `RUST_LOG`.
//!
//! [`metrics!`] declares a component's Prometheus metrics in one list: each field with its
//! docs, its type, its name and help text in `/metrics` and, for a type with no default, how
//! to make it. Every metric is then named in one place, not once in the struct, once where
//! it is made and once where it is registered.

pub mod logs;

pub use logs::{LogArgs, LogFormat};

#[doc(hidden)]
pub use prometheus_client::registry::Registry;

/// Declares a metrics struct and its `create(&mut Registry) -> Self`, which makes every
/// metric and registers it under its name (in the registry given: a sub-registry adds a
/// prefix).
///
/// ```
/// use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
///
/// blaze_telemetry::metrics! {
///     /// The example's metrics.
///     #[derive(Clone)]
///     pub struct Metrics {
///         /// Requests served.
///         requests: Counter = "requests", "Requests served";
///         /// Seconds per request.
///         latency: Histogram = "latency_seconds", "Request latency",
///             Histogram::new([0.1, 1.0].into_iter());
///     }
/// }
///
/// let mut registry = prometheus_client::registry::Registry::default();
/// let m = Metrics::create(&mut registry);
/// m.requests.inc();
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains("requests_total 1"), "{text}");
/// ```
#[macro_export]
macro_rules! metrics {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$field_attr:meta])*
                $field:ident: $ty:ty = $metric:literal, $help:literal $(, $make:expr)?;
            )*
        }
    ) => {
        $(#[$attr])*
        $vis struct $name {
            $( $(#[$field_attr])* pub $field: $ty, )*
        }

        impl $name {
            /// Makes every metric and registers it in `registry`.
            pub fn create(registry: &mut $crate::Registry) -> Self {
                let m = Self { $( $field: $crate::metrics!(@make $($make)?), )* };
                $( registry.register($metric, $help, m.$field.clone()); )*
                m
            }
        }
    };
    (@make) => { ::std::default::Default::default() };
    (@make $make:expr) => { $make };
}
