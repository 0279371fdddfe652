//! Blaze end to end, as named scenarios on the development control plane: the real binaries,
//! the real SmolLM2 model, kubectl and HTTP as a user uses them.
//!
//! `cargo test -p blaze-e2e` runs them all; `cargo test -p blaze-e2e scaling` those whose
//! name holds `scaling` (`-- --list` names them). They need the workspace's binaries built
//! (`cargo test --workspace` builds them; alone, `cargo build --workspace --bins`) and the
//! model in `.dev/models` (`scripts/fetch-models.sh`; `make test` runs it).
//!
//! Every scenario but the quickstart's runs on one shared control plane, started when the
//! first needs it and stopped after the last, each in a namespace of its own. Scenarios that
//! measure latency, or restart what all share (the operator), run alone; the others two at a
//! time.

mod caching;
mod diffusion;
mod embeddings;
mod quickstart;
mod recovery;
mod routing;
mod scaling;
mod scheduling;
mod tls;

use std::future::Future;
use std::sync::{Arc, RwLock};

use blaze_e2e::{DevCluster, Setup};
use libtest_mimic::{Arguments, Failed, Trial};

/// How a scenario shares the machine with others.
#[derive(Clone, Copy, PartialEq)]
enum Share {
    /// Alongside the other `Alongside` scenarios.
    Alongside,
    /// Alone: it measures latency, or restarts what every scenario shares.
    Alone,
}

/// What the scenarios share: the binaries and model, and the control plane.
pub struct Fixture {
    setup: std::sync::OnceLock<Result<Setup, String>>,
    cluster: tokio::sync::OnceCell<Result<DevCluster, String>>,
    turns: RwLock<()>,
}

impl Fixture {
    /// The binaries and the model, checked once.
    pub fn setup(&self) -> anyhow::Result<&Setup> {
        let setup = self.setup.get_or_init(|| Setup::from_build().map_err(|e| format!("{e:#}")));
        setup.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The shared control plane (the operator alone, no example applied), started by the
    /// first scenario that asks.
    pub async fn cluster(&self) -> anyhow::Result<&DevCluster> {
        let setup = self.setup()?;
        let cluster = self
            .cluster
            .get_or_init(async || {
                DevCluster::start(setup, false).await.map_err(|e| format!("{e:#}"))
            })
            .await;
        cluster.as_ref().map_err(|e| anyhow::anyhow!("the shared control plane: {e}"))
    }

    /// Runs `body` in an async runtime of its own, when `share` allows.
    fn run<F, Fut>(self: Arc<Self>, share: Share, body: F) -> Result<(), Failed>
    where
        F: FnOnce(Arc<Self>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let (_alongside, _alone);
        match share {
            Share::Alongside => _alongside = self.turns.read().unwrap_or_else(|e| e.into_inner()),
            Share::Alone => _alone = self.turns.write().unwrap_or_else(|e| e.into_inner()),
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        rt.block_on(body(self.clone())).map_err(|e| format!("{e:#}").into())
    }
}

/// A scenario named `name`, run by `body` when its turn comes.
fn scenario<F, Fut>(fixture: &Arc<Fixture>, name: &str, share: Share, body: F) -> Trial
where
    F: FnOnce(Arc<Fixture>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let fixture = fixture.clone();
    Trial::test(name, move || fixture.run(share, body))
}

fn main() {
    let args = Arguments::from_args();
    let fixture = Arc::new(Fixture {
        setup: Default::default(),
        cluster: Default::default(),
        turns: RwLock::new(()),
    });
    let f = &fixture;
    use Share::{Alone, Alongside};
    // Those that may share the machine first, so they pair up; then those that run alone.
    let scenarios = vec![
        scenario(
            f,
            "quickstart::dev_up_serves_a_chat_completion_and_dev_down_stops_every_process",
            Alongside,
            quickstart::dev_up_serves_a_chat_completion_and_dev_down_stops_every_process,
        ),
        scenario(
            f,
            "scaling::kubectl_scale_reaches_the_router_within_2_s_and_deleting_the_engine_ends_its_workers",
            Alongside,
            scaling::kubectl_scale_reaches_the_router_within_2_s_and_deleting_the_engine_ends_its_workers,
        ),
        scenario(
            f,
            "recovery::a_killed_worker_is_restarted_and_the_engine_is_whole_again",
            Alongside,
            recovery::a_killed_worker_is_restarted_and_the_engine_is_whole_again,
        ),
        scenario(
            f,
            "recovery::a_frozen_only_worker_is_replaced_and_the_engine_serves_again",
            Alongside,
            recovery::a_frozen_only_worker_is_replaced_and_the_engine_serves_again,
        ),
        scenario(
            f,
            "tls::a_router_serves_http2_over_tls_from_a_secret",
            Alongside,
            tls::a_router_serves_http2_over_tls_from_a_secret,
        ),
        scenario(
            f,
            "caching::conversations_sharing_a_system_prompt_reach_one_worker_and_reuse_its_prefix",
            Alongside,
            caching::conversations_sharing_a_system_prompt_reach_one_worker_and_reuse_its_prefix,
        ),
        scenario(
            f,
            "embeddings::the_embedding_example_serves_embeddings_through_its_router",
            Alongside,
            embeddings::the_embedding_example_serves_embeddings_through_its_router,
        ),
        scenario(
            f,
            "scheduling::more_gpus_than_any_node_has_is_unschedulable",
            Alongside,
            scheduling::more_gpus_than_any_node_has_is_unschedulable,
        ),
        scenario(
            f,
            "diffusion::the_diffusion_example_returns_a_png_through_its_router",
            Alongside,
            diffusion::the_diffusion_example_returns_a_png_through_its_router,
        ),
        scenario(
            f,
            "scaling::a_load_step_scales_up_within_10_s_and_down_only_after_the_window_and_delay",
            Alone,
            scaling::a_load_step_scales_up_within_10_s_and_down_only_after_the_window_and_delay,
        ),
        scenario(
            f,
            "scaling::an_engine_at_zero_answers_the_next_request_and_reports_the_cold_start",
            Alone,
            scaling::an_engine_at_zero_answers_the_next_request_and_reports_the_cold_start,
        ),
        scenario(
            f,
            "routing::a_slow_worker_loses_half_its_weight_within_seconds_and_regains_it",
            Alone,
            routing::a_slow_worker_loses_half_its_weight_within_seconds_and_regains_it,
        ),
        scenario(
            f,
            "recovery::a_frozen_worker_costs_no_request_and_at_most_10_s",
            Alone,
            recovery::a_frozen_worker_costs_no_request_and_at_most_10_s,
        ),
        scenario(
            f,
            "recovery::an_operator_restart_rewrites_nothing_and_keeps_the_worker_count_under_load",
            Alone,
            recovery::an_operator_restart_rewrites_nothing_and_keeps_the_worker_count_under_load,
        ),
    ];
    let conclusion = libtest_mimic::run(&args, scenarios);
    // The shared control plane stops here (`exit` would skip it).
    drop(fixture);
    conclusion.exit();
}
