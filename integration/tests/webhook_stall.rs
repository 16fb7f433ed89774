//! The controller's webhook cannot be stalled by clients that connect and say nothing: with
//! 100 idle TCP connections open, a valid AdmissionReview over a new TLS connection is still
//! answered at once; idle connections (before or after the TLS handshake) are closed after the
//! configured time. The webhook runs in this process (`controller::webhook::serve_on`) with the
//! TLS material the cluster tests use; the client trusts only the test CA.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::core::{ApiResource, DynamicObject};
use kube::runtime::reflector;
use ovs_egress::controller::webhook::{self, Limits};
use ovs_egress_core::api::v1beta1;
use ovs_egress_integration::webhook::write_tls;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, RootCertStore, pki_types::ServerName};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("oe-webhook-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A webhook on a loopback port with `limits`, and a TLS client configuration trusting it.
async fn start(tag: &str, limits: Limits) -> (SocketAddr, TlsConnector, TempDir) {
    let dir = TempDir::new(tag);
    let tls = write_tls(&dir.0, IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    let server = webhook::tls_config(&tls.cert_file, &tls.key_file).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let pools = reflector::store::Writer::<DynamicObject>::new(ApiResource::erase::<
        v1beta1::ExternalIPPool,
    >(&()))
    .as_reader();
    tokio::spawn(webhook::serve_on(tcp, server, pools, limits));

    let mut roots = RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::from_pem_slice(tls.ca_pem.as_bytes());
    roots.add(ca.unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (addr, TlsConnector::from(Arc::new(client)), dir)
}

use rustls::pki_types::pem::PemObject;

fn valid_review() -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-100",
            "kind": {"group": "crd.antrea.io", "version": "v1beta1", "kind": "Egress"},
            "resource": {"group": "crd.antrea.io", "version": "v1beta1", "resource": "egresses"},
            "name": "web",
            "operation": "CREATE",
            "userInfo": {},
            "object": {"apiVersion": "crd.antrea.io/v1beta1", "kind": "Egress",
                "metadata": {"name": "web"},
                "spec": {"appliedTo": {}, "egressIP": "10.0.0.1"}},
        }
    })
    .to_string()
}

/// POST one AdmissionReview over a new TLS connection; the response body.
async fn review(addr: SocketAddr, connector: &TlsConnector, body: &str) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let request = format!(
        "POST /validate/egress HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // The server closes the TLS session without close_notify when it is done (connection:
    // close): the bytes read until then are the response.
    let _ = tls.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_is_answered_at_once_while_100_idle_connections_are_open() {
    let (addr, connector, _dir) = start("idle100", Limits::default()).await;
    // Warm up (first handshake, code paths) so the measurement is about the idle sockets.
    assert!(
        review(addr, &connector, &valid_review())
            .await
            .contains("\"allowed\":true")
    );

    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // Give the server the chance to accept them all (and, before the fix, to block on them).
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    let response = review(addr, &connector, &valid_review()).await;
    let took = started.elapsed();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("\"uid\":\"u-100\"") && response.contains("\"allowed\":true"),
        "{response}"
    );
    assert!(
        took < Duration::from_millis(100),
        "the review took {took:?} with 100 idle connections open"
    );
    drop(idle);
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed_after_their_time_limits() {
    let limits = Limits {
        handshake_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(600),
        idle_timeout: Duration::from_millis(600),
        ..Limits::default()
    };
    let (addr, connector, _dir) = start("timeouts", limits).await;

    // No TLS ClientHello: closed after the handshake limit.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "silent connection closed after {took:?}"
    );

    // TLS done, no request: closed after the request/idle limit.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut tls, Duration::from_secs(5)).await);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "idle TLS connection closed after {took:?}"
    );

    // Half a request's headers: closed after the request limit.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"POST /validate/egress HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut tls, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_handshake_slot_held_a_new_client_is_served_once_one_frees() {
    let limits = Limits {
        handshakes: 4,
        handshake_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (addr, connector, _dir) = start("slots", limits).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    let response = review(addr, &connector, &valid_review()).await;
    assert!(response.contains("\"allowed\":true"), "{response}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "served after {:?}",
        started.elapsed()
    );
}
