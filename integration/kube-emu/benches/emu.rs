//! kube-emu benchmark (plain `fn main`, run with `cargo bench -p kube-emu --bench emu`):
//! 1. one list of 10,000 Pods over HTTP vs serializing the same objects in-process (baseline);
//! 2. watch fan-out: 1,000 changes to 10 watchers (events/s) vs serializing 10,000 watch lines;
//! 3. resident memory with 150,000 Pods vs the size of their JSON.
//!
//! Times are medians of 7 runs (fan-out: 5). Speaks raw HTTP/1.1 so no client library is measured.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i:06}"), "namespace": format!("ns-{}", i % 10), "labels": {"app": format!("app-{}", i % 50), "tier": "front"}},
        "spec": {"nodeName": format!("node-{}", i % 100), "containers": [{"name": "app", "image": "registry.example/app:1.0", "ports": [{"containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": format!("10.244.{}.{}", (i / 250) % 256, i % 250 + 2), "hostIP": format!("10.0.0.{}", i % 100 + 1)}})
}

fn start(pods: usize) -> (Server, Vec<Value>) {
    let objs: Vec<Value> = (0..pods).map(pod).collect();
    let path =
        std::env::temp_dir().join(format!("kube-emu-bench-{}-{pods}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(&objs).unwrap()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-emu"))
        .args(["--listen", "127.0.0.1:0", "--snapshot"])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting kube-emu");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let addr = line
        .trim()
        .strip_prefix("kube-emu listening on http://")
        .expect("address line")
        .to_string();
    (Server { child, addr }, objs)
}

/// One request on a keep-alive connection; returns the body.
fn request(s: &mut BufReader<TcpStream>, method: &str, path: &str, body: &str) -> Vec<u8> {
    write!(s.get_mut(), "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut len = 0;
    let mut status = String::new();
    s.read_line(&mut status).unwrap();
    assert!(
        status.starts_with("HTTP/1.1 20"),
        "{method} {path}: {status}"
    );
    loop {
        let mut h = String::new();
        s.read_line(&mut h).unwrap();
        if h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut buf = vec![0; len];
    s.read_exact(&mut buf).unwrap();
    buf
}

fn connect(addr: &str) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    BufReader::new(s)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench_list() {
    let (srv, objs) = start(10_000);
    let mut c = connect(&srv.addr);
    let mut http = Vec::new();
    let mut bytes = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let body = request(&mut c, "GET", "/api/v1/pods", "");
        http.push(t.elapsed());
        let n = serde_json::from_slice::<Value>(&body).unwrap()["items"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(n, 10_000);
        bytes = body.len();
    }
    let mut base = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let out = serde_json::to_vec(&objs).unwrap();
        base.push(t.elapsed());
        assert!(out.len() > 1000);
    }
    let (h, b) = (median(http), median(base));
    println!(
        "list 10,000 pods ({:.1} MB): median {:.1} ms over HTTP; baseline serde_json::to_vec {:.1} ms; ratio {:.2}",
        bytes as f64 / 1e6,
        h.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        h.as_secs_f64() / b.as_secs_f64()
    );
}

fn bench_fanout() {
    let (srv, _) = start(0);
    let mut rates = Vec::new();
    let mut write_only = Vec::new();
    for run in 0..5 {
        let ns = format!("run{run}");
        let mut c = connect(&srv.addr);
        request(
            &mut c,
            "POST",
            "/api/v1/namespaces",
            &json!({"metadata": {"name": ns}}).to_string(),
        );
        let rv: Value = serde_json::from_slice(&request(
            &mut c,
            "GET",
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            "",
        ))
        .unwrap();
        let rv = rv["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        let watchers: Vec<_> = (0..10)
            .map(|_| {
                let mut s = TcpStream::connect(&srv.addr).unwrap();
                write!(s, "GET /api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={rv} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                std::thread::spawn(move || {
                    let (mut seen, mut buf, mut tail) = (0, vec![0u8; 65536], Vec::new());
                    let needle = b"{\"type\":\"ADDED\"";
                    while seen < 1000 {
                        let n = s.read(&mut buf).unwrap();
                        assert!(n > 0, "watch ended early after {seen} events");
                        tail.extend_from_slice(&buf[..n]);
                        seen += tail.windows(needle.len()).filter(|w| *w == needle).count();
                        let keep = tail.len().saturating_sub(needle.len() - 1);
                        tail.drain(..keep);
                    }
                    Instant::now()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (addr, ns) = (srv.addr.clone(), ns.clone());
                std::thread::spawn(move || {
                    let mut c = connect(&addr);
                    for i in (w..1000).step_by(4) {
                        request(
                            &mut c,
                            "POST",
                            &format!("/api/v1/namespaces/{ns}/configmaps"),
                            &json!({"metadata": {"name": format!("cm-{i}")}, "data": {"k": "v"}})
                                .to_string(),
                        );
                    }
                })
            })
            .collect();
        writers.into_iter().for_each(|w| w.join().unwrap());
        write_only.push(t.elapsed());
        let last = watchers
            .into_iter()
            .map(|w| w.join().unwrap())
            .max()
            .unwrap();
        rates.push(last - t);
    }
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-1", "namespace": "run0", "uid": "0f0f0f0f-0000-4000-8000-000000000001", "resourceVersion": "12345", "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 1}, "data": {"k": "v"}});
    let mut base = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..10_000 {
            let line = serde_json::to_vec(&json!({"type": "ADDED", "object": cm})).unwrap();
            assert!(!line.is_empty());
        }
        base.push(t.elapsed());
    }
    let (d, w, b) = (median(rates), median(write_only), median(base));
    println!(
        "watch fan-out 1,000 creates x 10 watchers: median {:.0} ms until all delivered = {:.0} events/s (the 1,000 HTTP creates from 4 connections alone: {:.0} ms); baseline serializing 10,000 watch lines {:.1} ms; ratio {:.1}",
        d.as_secs_f64() * 1e3,
        10_000.0 / d.as_secs_f64(),
        w.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3,
        d.as_secs_f64() / b.as_secs_f64()
    );
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn bench_memory() {
    let (idle, _) = start(0);
    let idle_rss = rss_kib(idle.child.id());
    let before = rss_kib(std::process::id());
    let objs: Vec<Value> = (0..150_000).map(pod).collect();
    let baseline = rss_kib(std::process::id()) - before;
    let json_bytes: usize = objs
        .iter()
        .map(|o| serde_json::to_vec(o).unwrap().len())
        .sum();
    drop(objs);
    let t = Instant::now();
    let (srv, _) = start(150_000);
    let load = t.elapsed();
    let rss = rss_kib(srv.child.id());
    println!(
        "memory with 150,000 pods: server RSS {:.0} MiB (idle {:.1} MiB; {:.0} bytes/pod); baseline: the same pods as serde_json::Value in the bench process {:.0} MiB, ratio {:.2}; their JSON text {:.0} MiB; generating+loading the snapshot {:.1} s",
        rss as f64 / 1024.0,
        idle_rss as f64 / 1024.0,
        (rss - idle_rss) as f64 * 1024.0 / 150_000.0,
        baseline as f64 / 1024.0,
        (rss - idle_rss) as f64 / baseline as f64,
        json_bytes as f64 / 1048576.0,
        load.as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    bench_list();
    bench_fanout();
    bench_memory();
}
