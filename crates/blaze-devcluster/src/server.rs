//! Starting and stopping the server; the state its handlers share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, watch};

use crate::persist::Persist;
use crate::resources::Registry;
use crate::store::Store;
use crate::{Error, Result};

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free one. Loopback by default.
    pub listen: SocketAddr,
    /// Where to write a kubeconfig for kube-rs, kubectl and other clients.
    pub kubeconfig: Option<PathBuf>,
    /// Keep objects here so they survive a restart.
    pub data_dir: Option<PathBuf>,
    /// The admin's bearer token (group `system:masters`, allowed everything); random when
    /// `None`. Other clients use ServiceAccount tokens (see the `auth` module).
    pub token: Option<String>,
    /// Watch events kept for watches that resume from an older version and for lists read at
    /// an older version (later pages of a paged list); older ones get `410 Gone`.
    pub history: usize,
    /// Serve HTTPS with a certificate made at start (the default). kubectl sends its bearer
    /// token only over TLS; plain HTTP suits in-process clients and benchmarks.
    pub tls: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kubeconfig: None,
            data_dir: None,
            token: None,
            // About a minute of a busy operator's writes, as etcd's compaction would keep.
            history: 50_000,
            tls: true,
        }
    }
}

/// State shared by every handler and background task.
#[derive(Debug)]
pub struct State {
    /// The objects.
    pub store: Store,
    /// The resources served (built-in plus CRDs).
    pub registry: RwLock<Arc<Registry>>,
    /// The admin's bearer token (`system:masters`).
    pub token: String,
    /// The key ServiceAccount tokens are signed with.
    pub signing_key: [u8; 32],
    /// CEL evaluator for CRD validation rules.
    pub validator: Mutex<kube_cel::Validator>,
    /// Wakes the garbage collector.
    pub gc: Notify,
    /// Becomes `true` at shutdown; open watches end.
    pub shutdown: watch::Receiver<bool>,
    /// The listening address.
    pub addr: SocketAddr,
    /// Bumped by [`ApiServer::compact`]: open watches end with `410 Gone`.
    pub expire_watches: watch::Sender<u64>,
    /// Where `pods/log` reads from (the process kubelet installs one).
    pub log_source: LogHook,
}

/// Reads the log of a pod's container: `(namespace, pod, container)`.
pub type LogFn = Arc<dyn Fn(&str, &str, Option<&str>) -> Option<String> + Send + Sync>;

/// The installed log reader, if any.
#[derive(Default)]
pub struct LogHook(RwLock<Option<LogFn>>);

impl std::fmt::Debug for LogHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.read().is_some() { "LogHook(set)" } else { "LogHook(none)" })
    }
}

impl State {
    /// Rebuilds the registry from the built-in table and the stored CRDs.
    pub fn refresh_registry(&self) {
        let mut infos = crate::resources::builtin();
        if let Some(crds) = self.store.read().objects(crate::crd::CRD_KEY) {
            for crd in crds.values() {
                infos.extend(crate::crd::infos(crd));
            }
        }
        *self.registry.write() = Arc::new(Registry::new(infos));
    }

    /// Installs the reader behind `pods/NAME/log`.
    pub fn set_log_source(&self, f: LogFn) {
        *self.log_source.0.write() = Some(f);
    }

    /// A pod container's log, if a reader is installed and knows it.
    pub fn logs(&self, ns: &str, pod: &str, container: Option<&str>) -> Option<String> {
        let f = self.log_source.0.read().clone()?;
        f(ns, pod, container)
    }

    /// The current registry.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.read().clone()
    }
}

/// Resolves once `rx` turns `true` (shutdown).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// A running API server.
#[derive(Debug)]
pub struct ApiServer {
    state: Arc<State>,
    kubeconfig: Option<PathBuf>,
    ca_pem: Option<String>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Binds, loads `data_dir` if any, writes the kubeconfig and serves until
    /// [`ApiServer::shutdown`].
    pub async fn start(config: Config) -> Result<Self> {
        let persist = config.data_dir.as_deref().map(Persist::new).transpose()?;
        let store = Store::new(config.history, persist)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::Bind(config.listen, e))?;
        let addr = listener.local_addr().map_err(|e| Error::Bind(config.listen, e))?;
        let token = config.token.clone().unwrap_or_else(|| {
            format!("{}{}", crate::meta::uid(), crate::meta::uid()).replace('-', "")
        });
        let (stop, shutdown) = watch::channel(false);
        let state = Arc::new(State {
            store,
            registry: RwLock::new(Arc::new(Registry::default())),
            token,
            signing_key: crate::auth::token::load_or_generate_key(config.data_dir.as_deref())?,
            validator: Mutex::new(kube_cel::Validator::new()),
            gc: Notify::new(),
            shutdown,
            addr,
            log_source: LogHook::default(),
            expire_watches: watch::Sender::new(0),
        });
        crate::bootstrap::ensure_namespaces(&state)?;
        crate::auth::bootstrap::ensure_roles(&state)?;
        crate::auth::service_accounts::ensure_all(&state)?;
        state.refresh_registry();
        let tls = if config.tls {
            Some(crate::tls::load_or_generate(config.data_dir.as_deref(), addr.ip())?)
        } else {
            None
        };
        let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
        if let Some(path) = &config.kubeconfig {
            crate::persist::atomic_write(
                path,
                kubeconfig_yaml(addr, &state.token, ca_pem.as_deref()).as_bytes(),
            )?;
        }
        tokio::spawn(crate::gc::run(state.clone()));
        tokio::spawn(crate::auth::service_accounts::run(state.clone()));
        let app = crate::api::router(state.clone());
        let task = tokio::spawn(serve(listener, app, tls, state.shutdown.clone()));
        tracing::info!(%addr, "API server listening");
        Ok(Self { state, kubeconfig: config.kubeconfig, ca_pem, stop, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// `https://ADDR`, or `http://ADDR` without TLS.
    pub fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.state.addr)
    }

    /// The admin's bearer token.
    pub fn token(&self) -> &str {
        &self.state.token
    }

    /// PEM of the certificate authority clients must trust; `None` over plain HTTP.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Where the kubeconfig was written, if anywhere.
    pub fn kubeconfig_path(&self) -> Option<&std::path::Path> {
        self.kubeconfig.as_deref()
    }

    /// A kubeconfig for this server.
    pub fn kubeconfig(&self) -> String {
        kubeconfig_yaml(self.state.addr, &self.state.token, self.ca_pem.as_deref())
    }

    /// The shared state, for in-process components (kubelet, controllers).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Drops the watch history and ends every open watch with `410 Gone`, as an etcd
    /// compaction does to watchers that fall behind: clients must re-list.
    pub fn compact(&self) -> Result<()> {
        self.state.store.write(|inner| inner.compact())?;
        self.state.expire_watches.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Stops serving, ends open watches and waits for the listener to close.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// A kubeconfig pointing at `addr` with a bearer token, trusting `ca_pem` over HTTPS, or
/// plain HTTP when there is no CA (kube-rs accepts that; kubectl then sends no token).
pub fn kubeconfig_yaml(addr: SocketAddr, token: &str, ca_pem: Option<&str>) -> String {
    use base64::Engine;
    let cluster = match ca_pem {
        Some(pem) => format!(
            "    server: https://{addr}\n    certificate-authority-data: {}\n",
            base64::engine::general_purpose::STANDARD.encode(pem)
        ),
        None => format!("    server: http://{addr}\n"),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: blaze-dev\n  cluster:\n{cluster}\
         users:\n- name: blaze-dev\n  user:\n    token: {token}\ncontexts:\n- name: blaze-dev\n  context:\n\
         \x20   cluster: blaze-dev\n    user: blaze-dev\n    namespace: default\ncurrent-context: blaze-dev\n"
    )
}

/// Accepts connections (TLS or plain) until shutdown, then lets open ones finish for a while.
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<crate::tls::Tls>,
    mut stop: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.config));
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let (acceptor, app, watcher) = (acceptor.clone(), app.clone(), graceful.watcher());
        tokio::spawn(async move {
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let builder = auto::Builder::new(TokioExecutor::new());
            match acceptor {
                Some(a) => {
                    let Ok(stream) = a.accept(tcp).await else { return };
                    let _ = watcher
                        .watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), svc))
                        .await;
                }
                None => {
                    let _ = watcher
                        .watch(builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc))
                        .await;
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
}
