use super::*;
use k8s_openapi::api::core::v1::{ExecAction, GRPCAction, HTTPGetAction, TCPSocketAction};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use tokio::net::TcpListener;

/// A tiny HTTP server answering every request with the status in `code`.
async fn status_server(code: Arc<AtomicU16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let code = code.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

fn target() -> ProbeTarget {
    let mut env = Env::default();
    env.set("PATH", std::env::var("PATH").unwrap_or_default());
    env.set("WANT", "yes");
    ProbeTarget {
        pod_ip: Ipv4Addr::LOCALHOST,
        ports: [("http".to_string(), 1)].into(),
        env,
        cwd: std::env::temp_dir(),
    }
}

fn http_probe(port: IntOrString) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction { path: Some("/readyz".into()), port, ..Default::default() }),
        period_seconds: Some(1),
        failure_threshold: Some(2),
        ..Default::default()
    }
}

#[tokio::test]
async fn http_probe_follows_the_status_code_and_named_ports() {
    let code = Arc::new(AtomicU16::new(200));
    let port = status_server(code.clone()).await;
    let mut t = target();
    t.ports.insert("http".into(), port as i32);
    let probe = http_probe(IntOrString::String("http".into()));
    assert_eq!(check(&probe, &t).await, Ok(()));
    code.store(302, Ordering::SeqCst);
    assert_eq!(check(&probe, &t).await, Ok(()));
    code.store(503, Ordering::SeqCst);
    assert_eq!(check(&probe, &t).await, Err("HTTP probe failed with statuscode: 503".into()));
    let missing = http_probe(IntOrString::String("metrics".into()));
    assert_eq!(check(&missing, &t).await, Err("no port named \"metrics\"".into()));
}

#[tokio::test]
async fn tcp_and_exec_probes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port() as i32;
    let tcp = |port| Probe {
        tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(port), ..Default::default() }),
        ..Default::default()
    };
    assert_eq!(check(&tcp(port), &target()).await, Ok(()));
    drop(listener);
    assert!(check(&tcp(port), &target()).await.is_err());

    let exec = |script: &str| Probe {
        exec: Some(ExecAction {
            command: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        }),
        ..Default::default()
    };
    assert_eq!(check(&exec("test \"$WANT\" = yes"), &target()).await, Ok(()));
    let err = check(&exec("echo nope; exit 4"), &target()).await.unwrap_err();
    assert!(err.contains("nope"), "{err}");
    let slow = check(&exec("sleep 5"), &target()).await.unwrap_err();
    assert_eq!(slow, "timeout after 1s");
}

#[tokio::test]
async fn grpc_probe_asks_the_health_service() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("blaze", tonic_health::ServingStatus::NotServing).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port() as i32;
    let incoming = tokio_stream_from(listener);
    tokio::spawn(
        tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming),
    );
    let probe = |svc: &str| Probe {
        grpc: Some(GRPCAction { port, service: Some(svc.into()), ..Default::default() }),
        ..Default::default()
    };
    assert_eq!(check(&probe(""), &target()).await, Ok(()));
    let err = check(&probe("blaze"), &target()).await.unwrap_err();
    assert!(err.contains("NOT_SERVING"), "{err}");
    reporter.set_service_status("blaze", tonic_health::ServingStatus::Serving).await;
    assert_eq!(check(&probe("blaze"), &target()).await, Ok(()));
}

fn tokio_stream_from(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| s);
        Some((next, l))
    })
}

#[tokio::test]
async fn worker_applies_thresholds() {
    let code = Arc::new(AtomicU16::new(200));
    let port = status_server(code.clone()).await;
    let (tx, mut failures) = mpsc::unbounded_channel();
    let (mut verdict, _task) =
        spawn_worker(ProbeKind::Readiness, http_probe(IntOrString::Int(port as i32)), target(), tx);
    assert!(matches!(*verdict.borrow(), Verdict::Failure(_)));
    tokio::time::timeout(Duration::from_secs(5), verdict.wait_for(|v| *v == Verdict::Success))
        .await
        .unwrap()
        .unwrap();
    code.store(500, Ordering::SeqCst);
    // failureThreshold 2 at a 1s period: one failure is not enough.
    let first =
        tokio::time::timeout(Duration::from_secs(5), failures.recv()).await.unwrap().unwrap();
    assert_eq!(first.kind, ProbeKind::Readiness);
    assert_eq!(*verdict.borrow(), Verdict::Success);
    tokio::time::timeout(
        Duration::from_secs(5),
        verdict.wait_for(|v| matches!(v, Verdict::Failure(_))),
    )
    .await
    .unwrap()
    .unwrap();
}
