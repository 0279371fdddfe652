//! Pods run as real processes of the test app, without an API server.

use std::net::Ipv4Addr;

use blaze_devnode::backoff::BackoffConfig;
use blaze_devnode::container::RuntimeEvent;
use blaze_devnode::image::ImageMap;
use blaze_devnode::ipam::AddressPool;
use blaze_devnode::pod::{PodInputs, PodRun, RuntimeConfig};
use blaze_devnode::volumes::PodSources;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use tokio::sync::mpsc;

const APP: &str = env!("CARGO_BIN_EXE_blaze-devnode-testapp");

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.example/testapp:v1",
                "args": ["--listen=$(POD_IP):8080", "--print-file=/etc/app/msg"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
                "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"}]
            }],
            "volumes": [{"name": "cfg", "configMap": {"name": "app-config"}}],
            "terminationGracePeriodSeconds": 5
        }
    }))
    .unwrap()
}

fn sources() -> PodSources {
    let mut s = PodSources::default();
    s.config_maps.insert(
        "app-config".into(),
        ConfigMap {
            data: Some([("msg".to_string(), "from a configmap".to_string())].into()),
            ..Default::default()
        },
    );
    s
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// Waits up to 20 s for `f` to hold.
async fn poll(what: &str, mut f: impl FnMut() -> bool) {
    blaze_testing::eventually(what, 20, async || f().then_some(())).await
}

async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    Some(out)
}

#[tokio::test]
async fn two_pods_share_a_port_on_their_own_addresses_and_leave_no_process() {
    let root = tempfile::tempdir().unwrap();
    let mut images = ImageMap::empty();
    images.insert("testapp", APP);
    let config = RuntimeConfig {
        root: root.path().to_path_buf(),
        images,
        backoff: BackoffConfig::default().scaled_down(20),
        pod_env: vec![],
        api: None,
    };
    let pool = AddressPool::new(Ipv4Addr::new(127, 0, 9, 1), Ipv4Addr::new(127, 0, 9, 20));
    let (tx, _events) = mpsc::unbounded_channel::<RuntimeEvent>();
    let mut runs = Vec::new();
    for name in ["web-a", "web-b"] {
        let inputs = PodInputs {
            node_name: "node-0".into(),
            address: pool.allocate().unwrap(),
            sources: sources(),
            extra_env: vec![],
            credentials: None,
        };
        runs.push(PodRun::start(&config, &pod(name), inputs, tx.clone()).unwrap());
    }
    let mut pids = Vec::new();
    for run in &runs {
        let ready = |r: &PodRun| {
            let s = r.status();
            s.conditions.unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "True")
        };
        poll("pod ready", || ready(run)).await;
        let status = run.status();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ip = status.pod_ip.unwrap();
        let body = http_get(&format!("{ip}:8080"), "/").await.unwrap();
        assert!(body.ends_with(&format!("hello from {}\n", run.identity().name)), "{body}");
        let log = std::fs::read_to_string(run.log_path(None, false).unwrap()).unwrap();
        assert!(log.contains("msg: from a configmap"), "{log}");
        let id = status.container_statuses.unwrap()[0].container_id.clone().unwrap();
        pids.push(id.trim_start_matches("process://").parse::<u32>().unwrap());
    }
    assert_ne!(runs[0].status().pod_ip, runs[1].status().pod_ip);
    assert_eq!(pool.in_use(), 2);
    for run in runs {
        let status = run.stop(None).await;
        let state = status.container_statuses.unwrap()[0].state.clone().unwrap();
        assert_eq!(state.terminated.unwrap().exit_code, 0, "the app exits cleanly on SIGTERM");
    }
    assert_eq!(pool.in_use(), 0);
    for pid in pids {
        assert!(!alive(pid), "pod process {pid} outlived its pod");
    }
}

#[tokio::test]
async fn a_pod_process_dies_when_its_supervisor_is_killed() {
    use std::io::{BufRead, BufReader};
    let mut supervisor = std::process::Command::new(APP)
        .args(["--listen=127.0.0.1:0", "--spawn-child-listen=127.0.9.99:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(supervisor.stdout.take().unwrap()).lines();
    let child: u32 =
        lines.find_map(|l| l.ok()?.strip_prefix("child pid ").map(|p| p.parse().unwrap())).unwrap();
    assert!(alive(child));
    supervisor.kill().unwrap();
    supervisor.wait().unwrap();
    poll("the orphan to die", || !alive(child)).await;
}
