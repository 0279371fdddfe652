//! The supervisor loop.

use super::*;

impl Supervisor {
    pub(super) async fn run(mut self) {
        let mut backoff = Backoff::new(self.config.backoff);
        loop {
            let restarts = self.status.borrow().restart_count;
            let mut spec = self.config.process.clone();
            spec.log_path = self.config.log_dir.join(format!("{restarts}.log"));
            let mut process = match ContainerProcess::spawn(&spec) {
                Ok(p) => p,
                Err(e) => {
                    self.event("Failed", &format!("Error: {e}"), true);
                    self.status.send_modify(|s| {
                        s.state = Some(waiting(e.waiting_reason(), &e.to_string()))
                    });
                    if self.pause(backoff.next_delay(Duration::ZERO)).await {
                        return;
                    }
                    continue;
                }
            };
            let started_at = now();
            let has_startup = self.config.startup.is_some();
            self.status.send_modify(|s| {
                s.state = Some(ContainerState {
                    running: Some(ContainerStateRunning { started_at: Some(started_at.clone()) }),
                    ..Default::default()
                });
                s.container_id = Some(format!("process://{}", process.pid()));
                s.started = Some(!has_startup);
                s.ready = false;
            });
            self.event("Started", &format!("Started container {}", self.config.name), false);
            let (exit, end) = self.watch_run(&mut process).await;
            self.record_exit(exit, &end, started_at);
            if matches!(end, End::Stopped) {
                return;
            }
            let code = exit.container_exit_code();
            if !self.config.restart_policy.restarts(code) {
                let _ = self.stop.wait_for(Option::is_some).await;
                return;
            }
            let delay = backoff.next_delay(process.uptime());
            let message = format!(
                "back-off {} restarting failed container={}",
                human(delay),
                self.config.name
            );
            self.status.send_modify(|s| {
                s.last_state = s.state.take();
                s.state = Some(waiting("CrashLoopBackOff", &message));
            });
            self.event(
                "BackOff",
                &format!("Back-off restarting failed container {}", self.config.name),
                true,
            );
            if self.pause(delay).await {
                self.status.send_modify(|s| s.state = s.last_state.take());
                return;
            }
            self.status.send_modify(|s| s.restart_count += 1);
        }
    }

    /// Sleeps for `delay`; true when a stop came first.
    async fn pause(&mut self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = self.stop.wait_for(Option::is_some) => true,
        }
    }

    async fn watch_run(&mut self, process: &mut ContainerProcess) -> (Exit, End) {
        let (fail_tx, mut failures) = mpsc::unbounded_channel::<ProbeFailure>();
        let mut workers = Workers::default();
        let target = self.config.probe_target.clone();
        let mut startup = self
            .config
            .startup
            .clone()
            .map(|p| workers.spawn(ProbeKind::Startup, p, &target, &fail_tx));
        let mut readiness = None;
        let mut liveness = None;
        let mut stop = self.stop.clone();
        if startup.is_none() {
            (readiness, liveness) = self.after_startup(&mut workers, &target, &fail_tx);
        }
        loop {
            tokio::select! {
                exit = process.wait() => return (exit, End::Exited),
                Ok(grace) = async { stop.wait_for(Option::is_some).await.map(|g| *g) } => {
                    let grace = grace.unwrap_or_default();
                    return (process.terminate(grace).await, End::Stopped);
                }
                Some(f) = failures.recv() => self.report_failure(f),
                Some(v) = next_verdict(&mut startup) => match v {
                    Verdict::Success => {
                        startup = None;
                        self.status.send_modify(|s| s.started = Some(true));
                        (readiness, liveness) = self.after_startup(&mut workers, &target, &fail_tx);
                    }
                    Verdict::Failure(_) => {
                        self.report_failures(&mut failures);
                        return (self.kill(process, "startup").await, End::Killed("startup"));
                    }
                    Verdict::Unknown => {}
                },
                Some(v) = next_verdict(&mut liveness) => {
                    if let Verdict::Failure(_) = v {
                        self.report_failures(&mut failures);
                        return (self.kill(process, "liveness").await, End::Killed("liveness"));
                    }
                }
                Some(v) = next_verdict(&mut readiness) => {
                    self.status.send_modify(|s| s.ready = v == Verdict::Success);
                }
            }
        }
    }

    fn report_failure(&self, f: ProbeFailure) {
        let message = format!("{} probe failed: {}", f.kind.label(), f.message);
        self.event("Unhealthy", &message, true);
    }

    /// Records failures still queued, so the events come before the `Killing` they caused.
    fn report_failures(&self, failures: &mut mpsc::UnboundedReceiver<ProbeFailure>) {
        while let Ok(f) = failures.try_recv() {
            self.report_failure(f);
        }
    }

    fn after_startup(
        &self,
        workers: &mut Workers,
        target: &ProbeTarget,
        fail_tx: &mpsc::UnboundedSender<ProbeFailure>,
    ) -> (Option<watch::Receiver<Verdict>>, Option<watch::Receiver<Verdict>>) {
        if self.config.readiness.is_none() {
            self.status.send_modify(|s| s.ready = true);
        }
        let readiness = self
            .config
            .readiness
            .clone()
            .map(|p| workers.spawn(ProbeKind::Readiness, p, target, fail_tx));
        let liveness = self
            .config
            .liveness
            .clone()
            .map(|p| workers.spawn(ProbeKind::Liveness, p, target, fail_tx));
        (readiness, liveness)
    }

    async fn kill(&self, process: &mut ContainerProcess, probe: &str) -> Exit {
        let message =
            format!("Container {} failed {probe} probe, will be restarted", self.config.name);
        self.event("Killing", &message, false);
        process.terminate(self.config.grace).await
    }

    fn record_exit(&self, exit: Exit, end: &End, started_at: Time) {
        let code = exit.container_exit_code();
        let reason = match end {
            _ if code == 0 => "Completed",
            _ => "Error",
        };
        let message = match end {
            End::Killed(probe) => Some(format!("killed after the {probe} probe failed")),
            _ => None,
        };
        self.status.send_modify(|s| {
            s.ready = false;
            s.started = Some(false);
            s.state = Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    signal: exit.signal,
                    reason: Some(reason.into()),
                    message,
                    started_at: Some(started_at),
                    finished_at: Some(now()),
                    container_id: s.container_id.clone(),
                }),
                ..Default::default()
            });
        });
    }

    fn event(&self, reason: &str, message: &str, warning: bool) {
        let _ = self.events.send(RuntimeEvent {
            container: self.config.name.clone(),
            reason: reason.into(),
            message: message.into(),
            warning,
        });
    }
}

/// Probe tasks of one run; aborted when the run ends.
#[derive(Default)]
struct Workers(Vec<JoinHandle<()>>);

impl Workers {
    fn spawn(
        &mut self,
        kind: ProbeKind,
        probe: Probe,
        target: &ProbeTarget,
        failures: &mpsc::UnboundedSender<ProbeFailure>,
    ) -> watch::Receiver<Verdict> {
        let (rx, handle) = spawn_worker(kind, probe, target.clone(), failures.clone());
        self.0.push(handle);
        rx
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// The next verdict of an optional probe; pending forever when there is none.
async fn next_verdict(rx: &mut Option<watch::Receiver<Verdict>>) -> Option<Verdict> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// A duration as the kubelet prints it: `10s`, `2m40s`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        s if s < 60 => format!("{s}s"),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{}m{}s", s / 60, s % 60),
    }
}
