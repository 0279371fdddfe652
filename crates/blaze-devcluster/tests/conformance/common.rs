//! Starting a server and a kube-rs client for it.

use blaze_devcluster::{ApiServer, Config};
pub use blaze_testing::eventually;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A server on a free loopback port and a client for it.
pub async fn start() -> (ApiServer, Client) {
    start_with(Config::default()).await
}

/// A server with `config` and a client for it.
pub async fn start_with(config: Config) -> (ApiServer, Client) {
    let server = ApiServer::start(config).await.expect("server starts");
    let client = client_for(&server.kubeconfig()).await;
    (server, client)
}

/// A kube-rs client from kubeconfig YAML.
pub async fn client_for(kubeconfig: &str) -> Client {
    let kc = Kubeconfig::from_yaml(kubeconfig).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(config).expect("client builds")
}

/// The `Status` of a failed kube-rs call.
pub fn status_of<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}
