//! The Raft port on a hostile network (issue 13), and peer certificate rotation, on real
//! `keelson master` processes speaking mutual TLS between them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::writer::{assert_none_lost, Writer};
use keelson_chaos::cluster::{free_addr, PeerCa};
use keelson_chaos::{Cluster, Kv};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_keelson");
const ROUTES: [&str; 8] = [
    "append",
    "vote",
    "snapshot",
    "write",
    "read_index",
    "admin",
    "campaign",
    "prevote",
];

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn leader(c: &Cluster) -> u64 {
    c.wait_leader(secs(30)).await.expect("a leader")
}

/// Clients without a valid peer certificate: (who, client, scheme).
fn hostile_clients(peer_ca_pem: &str) -> Vec<(&'static str, reqwest::Client, &'static str)> {
    let no_identity = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(peer_ca_pem.as_bytes()).unwrap())
        .timeout(secs(5))
        .build()
        .unwrap();
    // A certificate named like a master, signed by ANOTHER CA.
    let foreign = PeerCa::new().client(1, peer_ca_pem);
    let plain = reqwest::Client::builder().timeout(secs(5)).build().unwrap();
    vec![
        ("no certificate", no_identity, "https"),
        ("another CA's certificate", foreign, "https"),
        ("plain HTTP", plain, "http"),
    ]
}

/// Every route, from every hostile client, with the claims of the finding (another cluster id,
/// a bincode `RemoveMaster { id: 3 }`): each must fail before any HTTP answer.
async fn attack(raft: std::net::SocketAddr, peer_ca_pem: &str, secrets: &[&str]) {
    for (who, client, scheme) in hostile_clients(peer_ca_pem) {
        for route in ROUTES {
            let got = client
                .post(format!("{scheme}://{raft}/raft/{route}"))
                .header("x-keelson-cluster", "evil")
                .body(vec![1u8, 3])
                .send()
                .await;
            match got {
                Ok(r) => panic!(
                    "{who}: /raft/{route} answered {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                Err(e) => {
                    let text = format!("{e:?}");
                    for s in secrets {
                        assert!(!text.contains(s), "{who}: the error names {s}: {text}");
                    }
                }
            }
        }
    }
    // Raw bytes: whatever comes back names nothing of the cluster.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(raft).await.unwrap();
    let _ = s
        .write_all(b"POST /raft/read_index HTTP/1.1\r\nhost: x\r\nx-keelson-cluster: x\r\ncontent-length: 0\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(secs(5), s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    for secret in secrets {
        assert!(!text.contains(secret), "raw answer names {secret}: {text}");
    }
    assert!(!text.contains("HTTP/1.1"), "no HTTP answer: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_callers_are_refused_at_the_handshake() {
    let bin = std::path::Path::new(BIN);
    let c = Cluster::start(bin, 3, &[]);
    let l = leader(&c).await;
    let kv = Kv::new(&c.url(l), secs(10));
    kv.create("before", "v").await.expect("write");
    let before = c.status(l).await.unwrap();
    let peer_ca = c.peer_ca().cert_pem().to_string();
    let cluster_id = c.cluster_id.clone();
    for id in c.ids() {
        attack(
            c.spec(id).raft,
            &peer_ca,
            &[&cluster_id, "master-2", "voters"],
        )
        .await;
    }
    // Membership and data are unchanged; the cluster still works.
    let l = leader(&c).await;
    let after = c.status(l).await.unwrap();
    assert_eq!(before["voters"], after["voters"]);
    assert_eq!(before["members"], after["members"]);
    assert_eq!(
        kv.get("before", false).await.unwrap().map(|(v, _)| v),
        Some("v".into())
    );
    let (items, _) = kv.list("", false).await.unwrap();
    assert_eq!(items.len(), 1, "nothing was written: {items:?}");
    kv.create("after", "v").await.expect("still takes writes");

    // A master that has never joined (started with --join, no cluster id) adopts nothing.
    let ip = match c.spec(1).raft.ip() {
        std::net::IpAddr::V4(ip) => ip,
        _ => unreachable!(),
    };
    let (raft, api) = (free_addr(ip), free_addr(ip));
    let dir = c.root().join("never-joined");
    let (cert, key) = c.peer_cert_paths(9);
    let (cert_pem, key_pem) = c.peer_ca().issue(9, ip);
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let log = std::fs::File::create(c.root().join("master-9.log")).unwrap();
    let mut fresh = std::process::Command::new(bin)
        .args(["master", "--id", "9", "--join"])
        .arg("--data-dir")
        .arg(&dir)
        .args([
            "--raft-addr",
            &raft.to_string(),
            "--api-addr",
            &api.to_string(),
        ])
        .arg("--peer-cert-file")
        .arg(&cert)
        .arg("--peer-key-file")
        .arg(&key)
        .arg("--peer-trusted-ca-file")
        .arg(c.root().join("peer-ca.crt"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let status = |api: std::net::SocketAddr| async move {
        reqwest::get(format!("http://{api}/cluster"))
            .await
            .ok()?
            .json::<serde_json::Value>()
            .await
            .ok()
    };
    let deadline = Instant::now() + secs(30);
    while status(api).await.is_none() {
        assert!(Instant::now() < deadline, "the fresh master never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    attack(raft, &peer_ca, &[&cluster_id]).await;
    let s = status(api).await.unwrap();
    assert!(s["cluster_id"].is_null(), "adopted an id: {s}");
    let _ = fresh.kill();
    let _ = fresh.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_certificates_rotate_one_master_at_a_time() {
    let mut c = Cluster::start(std::path::Path::new(BIN), 3, &[]);
    leader(&c).await;
    let urls: Vec<String> = c.ids().iter().map(|id| c.url(*id)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = Writer::spawn(urls.clone(), "rot/");
    // The watcher: the longest time during which no master reported a leader.
    let watcher = {
        let (stop, urls) = (stop.clone(), urls.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_millis(300))
                .build()
                .unwrap();
            let (mut last_seen, mut worst) = (Instant::now(), Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let mut seen = false;
                for u in &urls {
                    let s = http.get(format!("{u}/cluster")).send().await;
                    if let Ok(s) = s {
                        if let Ok(v) = s.json::<serde_json::Value>().await {
                            seen |= v["leader"].as_u64().is_some();
                        }
                    }
                }
                if seen {
                    last_seen = Instant::now();
                }
                worst = worst.max(last_seen.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            worst
        })
    };
    let old: Vec<Vec<u8>> = c
        .ids()
        .iter()
        .map(|id| std::fs::read(c.peer_cert_paths(*id).0).unwrap())
        .collect();
    // The procedure of docs/security.md: one master at a time.
    for id in c.ids() {
        c.reissue_peer_cert(id);
        let status = c.terminate(id).expect("stopped");
        assert!(
            status.success(),
            "clean stop of {id}: {status:?}\n{}",
            c.log_tail(id, 40)
        );
        c.spawn(id);
        let l = leader(&c).await;
        let applied = c.status(l).await.unwrap()["applied_index"]
            .as_u64()
            .unwrap();
        assert!(
            c.wait_applied(id, applied, secs(30)).await,
            "master {id} rejoined\n{}",
            c.log_tail(id, 20)
        );
    }
    writer.wait_more(20).await;
    let acked = writer.stop().await;
    stop.store(true, Ordering::Relaxed);
    let worst = watcher.await.unwrap();
    for (id, old) in c.ids().iter().zip(old) {
        assert_ne!(std::fs::read(c.peer_cert_paths(*id).0).unwrap(), old);
    }
    let l = leader(&c).await;
    assert_none_lost(&c.url(l), "rot/", &acked).await;
    assert!(acked.len() > 20);
    // Restarting the leader costs an election; there is never a longer gap than that.
    assert!(worst < secs(3), "no leader for {worst:?}");
}

/// What the mTLS measurement writes: `PUT /kv/KEY?upsert=true` of 16 B, or a pod created
/// through the API (`POST /api/v1/namespaces/default/pods`, nothing schedules it).
#[derive(Clone, Copy)]
enum Write {
    Kv,
    PodCreate,
}

/// Write throughput and latency on 3 masters, `clients` concurrent writers through the leader
/// for `for_secs`: (ops/s, p50 ms, p99 ms, errors).
async fn write_load(
    c: &Cluster,
    what: Write,
    clients: usize,
    for_secs: u64,
) -> (f64, f64, f64, usize) {
    let l = leader(c).await;
    let url = c.url(l);
    let deadline = Instant::now() + secs(for_secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let kv = Kv::new(&url, secs(10));
        let (http, url) = (reqwest::Client::new(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut i) = (Vec::new(), 0usize, 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = match what {
                    Write::Kv => kv
                        .put(&format!("bench/{w}/{}", i % 100), "0123456789abcdef")
                        .await
                        .is_ok(),
                    Write::PodCreate => http
                        .post(format!("{url}/api/v1/namespaces/default/pods"))
                        .json(&serde_json::json!({
                            "apiVersion": "v1", "kind": "Pod",
                            "metadata": {"name": format!("p-{clients}-{w}-{i}")},
                            "spec": {"containers": [{"name": "c", "image": "user/mysite"}]}}))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 201),
                };
                if ok {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (lat.len() as f64 / elapsed, pct(0.5), pct(0.99), errors)
}

/// The cost of peer mTLS on kv writes and pod creates, against plaintext peers in the same run
/// (docs/performance.md). `MTLS_BENCH_SECS=8 cargo test --test security -- --ignored
/// --nocapture mtls_cost`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run by hand"]
async fn mtls_cost_on_writes() {
    let bin = std::path::Path::new(BIN);
    let for_secs: u64 = std::env::var("MTLS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    println!("| peers | write | clients | ops/s | p50 ms | p99 ms | errors |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for round in 0..2 {
        for (name, args) in [
            ("mTLS", &["--no-controllers"][..]),
            (
                "plaintext",
                &["--no-controllers", "--insecure-plaintext-peers"][..],
            ),
        ] {
            let c = Cluster::start(bin, 3, args);
            leader(&c).await;
            for (what, label) in [(Write::Kv, "kv put"), (Write::PodCreate, "pod create")] {
                for clients in [1, 16] {
                    let (ops, p50, p99, errors) = write_load(&c, what, clients, for_secs).await;
                    println!(
                        "| {name} (round {}) | {label} | {clients} | {ops:.0} | {p50:.1} | {p99:.1} | {errors} |",
                        round + 1
                    );
                }
            }
        }
    }
}

/// POSTs `body` to master `to`'s `/raft/{route}` as the holder of master `as_id`'s certificate
/// (signed by the cluster's peer CA), with the cluster's id and, if given, a forwarding header.
async fn as_master(
    c: &Cluster,
    as_id: u64,
    to: u64,
    route: &str,
    body: Vec<u8>,
    from: Option<u64>,
) -> (u16, String) {
    let client = c.peer_ca().client(as_id, c.peer_ca().cert_pem());
    let mut req = client
        .post(c.raft_url(to, route))
        .header("x-keelson-cluster", &c.cluster_id)
        .body(body);
    if let Some(from) = from {
        req = req.header("x-keelson-from", from.to_string());
    }
    let r = req
        .send()
        .await
        .expect("an authenticated caller is answered");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// A valid certificate speaks only for the master it names, and only while that master is a
/// member: master 2's certificate cannot ask votes for master 3 or forward as master 1, and a
/// removed master (its certificate still valid) can neither start an election nor forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_speaks_only_for_its_own_member_master() {
    use keelson_raft::codec::encode;
    use openraft::raft::VoteRequest;
    use openraft::Vote;

    let bin = std::path::Path::new(BIN);
    let c = Cluster::start(bin, 3, &[]);
    let l = leader(&c).await;
    let kv = Kv::new(&c.url(l), secs(10));
    kv.create("before", "v").await.expect("write");
    let term = |s: &serde_json::Value| s["term"].as_u64().unwrap_or_default();
    let before = c.status(l).await.unwrap();
    let other = *c.ids().iter().find(|id| **id != l).unwrap();
    let third = *c
        .ids()
        .iter()
        .find(|id| **id != l && **id != other)
        .unwrap();

    // A vote for `third` at a far higher term, asked with `other`'s certificate.
    let vote = |candidate: u64| {
        encode(&VoteRequest::<u64>::new(Vote::new(1_000, candidate), None)).unwrap()
    };
    let (code, text) = as_master(&c, other, l, "vote", vote(third), None).await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains(&format!("names master {other}")), "{text}");
    // Forwarding a write as another master.
    let remove = encode(&keelson_raft::node::AdminRequest::RemoveMaster { id: third }).unwrap();
    let (code, text) = as_master(&c, other, l, "admin", remove.clone(), Some(third)).await;
    assert_eq!(code, 403, "{text}");
    // A certificate of the right CA for a master that was never a member.
    for route in ROUTES
        .iter()
        .filter(|r| !matches!(**r, "append" | "snapshot"))
    {
        let (code, text) = as_master(&c, 9, l, route, vote(9), None).await;
        assert_eq!(code, 403, "/raft/{route}: {text}");
        assert!(text.contains("not a member"), "{text}");
    }
    // Nothing moved: same leader, same term, same members.
    let after = c.status(l).await.unwrap();
    assert_eq!(term(&before), term(&after), "{before} {after}");
    assert_eq!(before["voters"], after["voters"]);
    assert_eq!(after["leader"], serde_json::json!(l));

    // Remove `third` (still running, its certificate still valid): refused from then on.
    let r = c
        .client_builder()
        .build()
        .unwrap()
        .delete(format!("{}/cluster/masters/{third}", c.url(l)))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "remove: {}",
        r.text().await.unwrap()
    );
    let deadline = Instant::now() + secs(20);
    loop {
        let (code, text) = as_master(&c, third, l, "vote", vote(third), None).await;
        if code == 403 {
            assert!(text.contains("not a member"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the removed master is still heard: {code} {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let write = encode(&keelson_raft::Command::Batch(vec![])).unwrap();
    let (code, text) = as_master(&c, third, l, "write", write, None).await;
    assert_eq!(code, 403, "{text}");
    // Nor may it lead: its appends are refused by both remaining masters.
    let append = encode(
        &openraft::raft::AppendEntriesRequest::<keelson_raft::TypeConfig> {
            vote: Vote::new_committed(1_000, third),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        },
    )
    .unwrap();
    let applied = c.status(l).await.unwrap()["applied_index"]
        .as_u64()
        .unwrap();
    assert!(
        c.wait_applied(other, applied, secs(20)).await,
        "{other} applies the removal"
    );
    for to in [l, other] {
        let (code, text) = as_master(&c, third, to, "append", append.clone(), None).await;
        assert_eq!(code, 403, "append to {to}: {text}");
    }
    // The remaining pair still takes writes, and the leader's term never moved.
    kv.create("after", "v").await.expect("still takes writes");
    let last = c.status(l).await.unwrap();
    assert_eq!(term(&before), term(&last), "{last}");
}
