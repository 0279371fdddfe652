//! The node side against the development API server, in-process, with real test app
//! processes: Deployments scale and delete cleanly, pods that fit nowhere stay Pending.

use std::time::{Duration, Instant};

use blaze_devcluster::{ApiServer, Config};
use blaze_devnode::backoff::BackoffConfig;
use blaze_devnode::image::ImageMap;
use blaze_devnode::ipam::AddressPool;
use blaze_devnode::k8s::kubelet::LogRequest;
use blaze_devnode::k8s::node::NodeConfig;
use blaze_devnode::k8s::plane::NodeSide;
use blaze_devnode::pod::RuntimeConfig;
use blaze_devnode::service_account::ApiAccess;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::net::Ipv4Addr;

const APP: &str = env!("CARGO_BIN_EXE_blaze-devnode-testapp");

struct Cluster {
    server: ApiServer,
    client: Client,
    nodes: NodeSide,
    _root: tempfile::TempDir,
}

/// A control plane whose pods get addresses 127.0.`octet`.1 to .254, so tests running at
/// the same time never share one.
async fn start(gpus: u32, octet: u8) -> Cluster {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = ApiServer::start(Config::default()).await.unwrap();
    let kc = Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    let client = Client::try_from(config).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut images = ImageMap::empty();
    images.insert("testapp", APP);
    let runtime = RuntimeConfig {
        root: root.path().to_path_buf(),
        images,
        backoff: BackoffConfig::default().scaled_down(20),
        pod_env: vec![],
        api: Some(ApiAccess { server: server.url(), ca_pem: server.ca_pem().map(str::to_owned) }),
    };
    let pool = AddressPool::new(Ipv4Addr::new(127, 0, octet, 1), Ipv4Addr::new(127, 0, octet, 254));
    let nodes =
        NodeSide::start(client.clone(), vec![NodeConfig::new("node-0", gpus)], runtime, pool)
            .await
            .unwrap();
    server.state().set_log_source(nodes.log_fn());
    Cluster { server, client, nodes, _root: root }
}

/// Waits up to 30 s for what `f` looks for.
async fn poll<T>(what: &str, f: impl AsyncFnMut() -> Option<T>) -> T {
    blaze_testing::eventually(what, 30, f).await
}

fn deployment(replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "app", "image": "testapp:v1",
                    "args": ["--listen=$(POD_IP):8080"],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1}
                }]}
            }
        }
    }))
    .unwrap()
}

fn pids(pods: &[Pod]) -> Vec<u32> {
    pods.iter()
        .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
        .filter_map(|c| c.container_id.as_deref()?.strip_prefix("process://")?.parse().ok())
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

async fn ready_pods(api: &Api<Pod>) -> Vec<Pod> {
    let pods = api.list(&ListParams::default().labels("app=web")).await.unwrap().items;
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_scales_0_3_1_and_deleting_it_leaves_no_process() {
    let c = start(2, 201).await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    deploys.create(&PostParams::default(), &deployment(0)).await.unwrap();
    let scale = |n: i32| json!({"spec": {"replicas": n}});
    deploys.patch("web", &PatchParams::default(), &Patch::Merge(scale(3))).await.unwrap();
    let three = poll("3 ready pods", async || {
        let ready = ready_pods(&pods).await;
        (ready.len() == 3).then_some(ready)
    })
    .await;
    let mut ips: Vec<_> = three.iter().filter_map(|p| p.status.as_ref()?.pod_ip.clone()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "each pod has its own address");
    let first_pids = pids(&three);
    assert!(first_pids.iter().all(|p| alive(*p)));
    let d = poll("deployment status", async || {
        let d = deploys.get("web").await.ok()?;
        (d.status.as_ref()?.available_replicas == Some(3)).then_some(d)
    })
    .await;
    let available = d
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Available"));
    assert_eq!(available.and_then(|c| c.status), Some("True".into()));

    let name = three[0].name_any();
    let req = LogRequest { namespace: "default", pod: &name, container: None, previous: false };
    let log = c.nodes.logs(&req).unwrap();
    assert!(String::from_utf8_lossy(&log).contains("listening on"));

    deploys.patch("web", &PatchParams::default(), &Patch::Merge(scale(1))).await.unwrap();
    poll("1 pod left", async || {
        let all = pods.list(&ListParams::default().labels("app=web")).await.ok()?.items;
        (all.len() == 1).then_some(())
    })
    .await;
    let still = first_pids.iter().filter(|p| alive(**p)).count();
    assert_eq!(still, 1, "scaled-down pods' processes are gone");

    deploys.delete("web", &DeleteParams::foreground()).await.unwrap();
    poll("no pods", async || {
        let all = pods.list(&ListParams::default().labels("app=web")).await.ok()?.items;
        all.is_empty().then_some(())
    })
    .await;
    poll("no processes", async || first_pids.iter().all(|p| !alive(*p)).then_some(())).await;
    c.nodes.shutdown().await;
    c.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_asking_for_too_many_gpus_stays_pending_with_a_reason_and_an_event() {
    let c = start(4, 202).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "greedy", "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "testapp:v1",
            "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let condition = poll("PodScheduled=False", async || {
        let p = pods.get("greedy").await.ok()?;
        let conds = p.status?.conditions?;
        conds.into_iter().find(|c| c.type_ == "PodScheduled" && c.status == "False")
    })
    .await;
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        condition.message.as_deref(),
        Some("0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")
    );
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let event = poll("FailedScheduling event", async || {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        list.into_iter().find(|e| e.reason.as_deref() == Some("FailedScheduling"))
    })
    .await;
    assert_eq!(event.regarding.and_then(|r| r.name).as_deref(), Some("greedy"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let p = pods.get("greedy").await.unwrap();
    assert!(p.spec.unwrap().node_name.is_none());
    c.nodes.shutdown().await;
    c.server.shutdown().await;
}

async fn post(addr: &str, path: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_takes_a_pod_out_of_the_endpointslice_and_puts_it_back() {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let c = start(0, 203).await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    deploys.create(&PostParams::default(), &deployment(1)).await.unwrap();
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(c.client.clone(), "default")
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "default");
    let ready_of = async |want: bool| {
        poll(&format!("endpoint ready={want}"), async || {
            let list = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                .await
                .ok()?;
            let ep = list.items.first()?.endpoints.clone()?.into_iter().next()?;
            let ready = ep.conditions.as_ref()?.ready?;
            (ready == want).then(|| ep.addresses[0].clone())
        })
        .await
    };
    let ip = ready_of(true).await;
    post(&format!("{ip}:8080"), "/control/fail-ready").await;
    assert_eq!(ready_of(false).await, ip);
    post(&format!("{ip}:8080"), "/control/pass-ready").await;
    assert_eq!(ready_of(true).await, ip);
    c.nodes.shutdown().await;
    c.server.shutdown().await;
}

async fn get_text(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_keeps_replicas_minus_max_unavailable_ready_and_ends_on_the_new_version() {
    let c = start(0, 204).await;
    let deploys: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let mut d = deployment(3);
    let spec = &mut d.spec;
    spec.strategy = serde_json::from_value(json!({
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}
    }))
    .unwrap();
    // New pods take a moment to become ready, so the rollout really has to wait for them.
    spec.template.spec.as_mut().unwrap().containers[0].env =
        serde_json::from_value(json!([{"name": "BLAZE_READY_AFTER_MS", "value": "700"}])).unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let old = poll("3 ready pods", async || {
        let ready = ready_pods(&pods).await;
        (ready.len() == 3).then_some(ready)
    })
    .await;
    let old_pids = pids(&old);
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "testapp:v2"}]}}}});
    deploys.patch("web", &PatchParams::default(), &Patch::Strategic(image)).await.unwrap();
    let mut lowest = 3;
    let deadline = Instant::now() + Duration::from_secs(60);
    let new = loop {
        let ready = ready_pods(&pods).await;
        lowest = lowest.min(ready.len());
        let on_v2 = ready.iter().filter(|p| pod_image(p) == "testapp:v2").count();
        let all = pods.list(&ListParams::default().labels("app=web")).await.unwrap().items;
        if on_v2 == 3 && all.len() == 3 {
            break ready;
        }
        assert!(Instant::now() < deadline, "rollout did not finish: {on_v2}/3 on v2");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(lowest >= 2, "ready pods fell to {lowest}, below replicas - maxUnavailable = 2");
    for p in &new {
        let ip = p.status.as_ref().unwrap().pod_ip.clone().unwrap();
        assert_eq!(get_text(&format!("{ip}:8080"), "/version").await, "testapp:v2");
    }
    poll("old processes gone", async || old_pids.iter().all(|p| !alive(*p)).then_some(())).await;
    let status = poll("deployment complete", async || {
        let s = deploys.get("web").await.ok()?.status?;
        (s.updated_replicas == Some(3) && s.available_replicas == Some(3)).then_some(s)
    })
    .await;
    let progressing =
        status.conditions.unwrap().into_iter().find(|c| c.type_.as_deref() == Some("Progressing"));
    assert_eq!(progressing.and_then(|c| c.reason).as_deref(), Some("NewReplicaSetAvailable"));
    c.nodes.shutdown().await;
    c.server.shutdown().await;
}

fn pod_image(p: &Pod) -> String {
    p.spec.as_ref().and_then(|s| s.containers[0].image.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_exits_is_restarted_with_backoff_and_its_status_says_why() {
    let c = start(0, 205).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "crashy", "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "testapp:v1",
            "args": ["--listen=$(POD_IP):8080", "--exit-after-ms=200", "--exit-code=3"]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let mut saw_backoff = false;
    let status = poll("3 restarts", async || {
        let s = pods.get("crashy").await.ok()?.status?.container_statuses?.remove(0);
        let waiting = s.state.as_ref().and_then(|st| st.waiting.as_ref());
        saw_backoff |= waiting.and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff");
        (s.restart_count >= 3).then_some(s)
    })
    .await;
    assert!(saw_backoff, "the container waited in CrashLoopBackOff between restarts");
    let last = status.last_state.and_then(|s| s.terminated).expect("last termination");
    assert_eq!(last.exit_code, 3);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let backoff = poll("BackOff event", async || {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        list.into_iter().find(|e| e.reason.as_deref() == Some("BackOff"))
    })
    .await;
    assert_eq!(backoff.regarding.and_then(|r| r.name).as_deref(), Some("crashy"));
    c.nodes.shutdown().await;
    c.server.shutdown().await;
}

fn init_pod(name: &str, restart_policy: &str, init_args: &[&str]) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "restartPolicy": restart_policy,
            "volumes": [{"name": "work", "emptyDir": {}}],
            "initContainers": [{"name": "prepare", "image": "testapp:v1", "args": init_args,
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
            "containers": [{"name": "app", "image": "testapp:v1",
                "args": ["--listen=$(POD_IP):8080", "--print-file=/work/msg"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}]
        }
    }))
    .unwrap()
}

fn condition(p: &Pod, type_: &str) -> Option<(String, Option<String>)> {
    let c = p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_to_completion_before_the_app_and_a_failing_one_holds_it_back() {
    let c = start(0, 206).await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let write = ["--write-file=/work/msg", "--write-text=prepared by init"];
    pods.create(&PostParams::default(), &init_pod("prepared", "Always", &write)).await.unwrap();
    let fail = ["--listen=$(POD_IP):8081", "--exit-after-ms=100", "--exit-code=3"];
    pods.create(&PostParams::default(), &init_pod("blocked", "Always", &fail)).await.unwrap();
    pods.create(&PostParams::default(), &init_pod("failed", "Never", &fail)).await.unwrap();

    // The init container wrote the file the app prints, in a volume they share.
    let ready = poll("the initialised pod ready", async || {
        let p = pods.get("prepared").await.ok()?;
        (condition(&p, "Ready")?.0 == "True").then_some(p)
    })
    .await;
    assert_eq!(condition(&ready, "Initialized").map(|c| c.0).as_deref(), Some("True"));
    let init = &ready.status.as_ref().unwrap().init_container_statuses.as_ref().unwrap()[0];
    let done = init.state.as_ref().and_then(|s| s.terminated.as_ref()).expect("init finished");
    assert_eq!((done.exit_code, done.reason.as_deref()), (0, Some("Completed")));
    let logs = pods
        .logs(
            "prepared",
            &kube::api::LogParams { container: Some("app".into()), ..Default::default() },
        )
        .await
        .unwrap();
    assert!(logs.contains("/work/msg: prepared by init"), "the app read the init's file: {logs}");

    // A failing init container is restarted with backoff; the app never starts.
    let blocked = poll("the failing init container restarted twice", async || {
        let p = pods.get("blocked").await.ok()?;
        let init = p.status.as_ref()?.init_container_statuses.as_ref()?[0].clone();
        (init.restart_count >= 2).then_some(p)
    })
    .await;
    let status = blocked.status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let initialised = condition(&blocked, "Initialized").unwrap();
    assert_eq!(initialised, ("False".into(), Some("ContainersNotInitialized".into())));
    let app = &status.container_statuses.as_ref().unwrap()[0];
    let waiting = app.state.as_ref().and_then(|s| s.waiting.as_ref()).expect("app waits");
    assert_eq!(waiting.reason.as_deref(), Some("PodInitializing"));
    assert!(app.container_id.is_none(), "the app container never started");

    // Under `restartPolicy: Never` the pod fails instead.
    let failed = poll("the pod with a failed init container Failed", async || {
        let p = pods.get("failed").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Failed")).then_some(p)
    })
    .await;
    let init = &failed.status.as_ref().unwrap().init_container_statuses.as_ref().unwrap()[0];
    let ended = init.state.as_ref().and_then(|s| s.terminated.as_ref()).expect("init ended");
    assert_eq!((ended.exit_code, init.restart_count), (3, 0));
    c.nodes.shutdown().await;
    c.server.shutdown().await;
}

fn token_pod(name: &str, account: Option<&str>, automount: Option<bool>) -> Pod {
    let mut pod = json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "app", "image": "testapp:v1",
            "args": ["--listen=$(POD_IP):8080",
                     "--print-file=/var/run/secrets/kubernetes.io/serviceaccount/token"],
        }]},
    });
    if let Some(a) = account {
        pod["spec"]["serviceAccountName"] = json!(a);
    }
    if let Some(a) = automount {
        pod["spec"]["automountServiceAccountToken"] = json!(a);
    }
    serde_json::from_value(pod).unwrap()
}

/// Each pod reads the token of its own ServiceAccount at the standard path, and that token
/// is the account's identity on the API server (here with no rights: `403`); a pod that
/// turns automounting off has no such file; a pod of an account that does not exist waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_gets_the_token_of_its_own_service_account_or_none() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let c = start(0, 207).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "default");
    let robot: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "robot"}})).unwrap();
    accounts.create(&PostParams::default(), &robot).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let pp = PostParams::default();
    pods.create(&pp, &token_pod("robot", Some("robot"), None)).await.unwrap();
    pods.create(&pp, &token_pod("untokened", None, Some(false))).await.unwrap();
    pods.create(&pp, &token_pod("orphan", Some("missing"), None)).await.unwrap();

    let log = |name: &'static str| {
        let pods = pods.clone();
        async move { pods.logs(name, &Default::default()).await.ok().filter(|l| !l.is_empty()) }
    };
    let token = poll("the robot pod printed its token", async || {
        let printed = log("robot").await?;
        let line = printed.lines().find(|l| l.contains("serviceaccount/token: "))?;
        Some(line.rsplit(": ").next()?.to_owned())
    })
    .await;
    let kubeconfig = c.server.kubeconfig().replace(c.server.token(), &token);
    let kc = Kubeconfig::from_yaml(&kubeconfig).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    let as_robot: Api<Pod> = Api::namespaced(Client::try_from(config).unwrap(), "default");
    match as_robot.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(
            s.message,
            "pods is forbidden: User \"system:serviceaccount:default:robot\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        ),
        other => panic!("expected a 403, got {other:?}"),
    }

    let missing = poll("the pod without a token failed", async || log("untokened").await).await;
    assert!(missing.contains("No such file"), "{missing}");

    let waiting = poll("the pod of a missing account waits", async || {
        let p = pods.get("orphan").await.ok()?;
        let s = p.status?.container_statuses?.first()?.state.clone()?.waiting?;
        s.message.filter(|m| m.contains("ServiceAccount"))
    })
    .await;
    assert!(waiting.contains("\"missing\""), "{waiting}");
    c.nodes.shutdown().await;
    c.server.shutdown().await;
}
