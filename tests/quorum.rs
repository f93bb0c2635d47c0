//! The master quorum, end to end: real `keelson master` processes on loopback, killed,
//! restarted, wiped and re-membered. No sleeps as synchronisation: every wait polls a
//! condition with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::tmpfs::Tmpfs;
use common::writer::{assert_none_lost, Writer};
use keelson_chaos::{Cluster, Kv, KvError};

mod common;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_keelson");

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn leader(c: &Cluster) -> u64 {
    match c.wait_leader(secs(30)).await {
        Some(l) => l,
        None => {
            let logs: Vec<String> = c
                .ids()
                .iter()
                .map(|id| format!("--- master {id}\n{}", c.log_tail(*id, 20)))
                .collect();
            panic!("no leader elected\n{}", logs.join("\n"));
        }
    }
}

/// Retries a write until it is acknowledged or the deadline passes.
async fn put_eventually(kv: &Kv, key: &str, value: &str, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        match kv.put(key, value).await {
            Ok(rv) => return rv,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("write of {key} never acknowledged: {e}"),
        }
    }
}

/// Every key/value under `prefix` on master `id`'s own replica.
async fn local_items(c: &Cluster, id: u64, prefix: &str) -> BTreeMap<String, String> {
    let kv = Kv::new(&c.url(id), secs(5));
    let (items, _) = kv.list(prefix, true).await.expect("local list");
    items.into_iter().map(|(k, v, _)| (k, v)).collect()
}

/// A gauge's value in a master's `/metrics`.
async fn metric(c: &Cluster, id: u64, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", c.url(id)))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Writes through a follower, SIGKILL of the leader, writes on, restart and catch-up.
async fn failover_scenario(n: u64) {
    let mut c = Cluster::start(std::path::Path::new(BIN), n, &[]);
    let l1 = leader(&c).await;
    let follower = *c.ids().iter().find(|id| **id != l1).unwrap();
    let kv_f = Kv::new(&c.url(follower), secs(5));
    for i in 0..20 {
        kv_f.create(&format!("k/{i:03}"), &format!("v{i}"))
            .await
            .expect("write through a follower");
    }
    // The same linearizable answer from every master.
    for id in c.ids() {
        let (items, _) = Kv::new(&c.url(id), secs(5))
            .list("k/", false)
            .await
            .unwrap();
        assert_eq!(items.len(), 20, "master {id} sees every acknowledged write");
    }
    let term1 = c.status(l1).await.unwrap()["term"].as_u64().unwrap();

    c.kill(l1);
    let kv_s = Kv::new(&c.url(follower), secs(3));
    put_eventually(&kv_s, "k/after-kill", "x", secs(20)).await;
    let l2 = leader(&c).await;
    assert_ne!(l2, l1, "a new leader took over");
    assert!(
        c.status(l2).await.unwrap()["term"].as_u64().unwrap() > term1,
        "the term rose"
    );
    for i in 0..20 {
        kv_s.put(&format!("k/more-{i}"), "y")
            .await
            .expect("writes go on");
    }

    // The killed master restarts from its data dir and catches up.
    c.spawn(l1);
    let (want, rv) = kv_s.list("k/", false).await.unwrap();
    assert!(
        c.wait_rv(l1, rv, secs(30)).await,
        "restarted master caught up\n{}",
        c.log_tail(l1, 20)
    );
    let got = local_items(&c, l1, "k/").await;
    let want: BTreeMap<String, String> = want.into_iter().map(|(k, v, _)| (k, v)).collect();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_survive_leader_kill() {
    failover_scenario(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_masters_survive_leader_kill() {
    failover_scenario(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_master_is_caught_up_by_snapshot() {
    let mut c = Cluster::start(
        std::path::Path::new(BIN),
        3,
        &["--snapshot-every", "40", "--keep-logs", "0"],
    );
    let l = leader(&c).await;
    let lagging = *c.ids().iter().find(|id| **id != l).unwrap();
    c.kill(lagging);
    let kv = Kv::new(&c.url(l), secs(5));
    // Values of 1 KiB: a snapshot is built only once the log has grown by a quarter of the
    // state, which holds the default roles too, so the log must outgrow them.
    let value = "v".repeat(1024);
    for i in 0..150 {
        kv.create(&format!("s/{i:03}"), &value)
            .await
            .expect("write");
    }
    // The leader's log is purged past where the lagging master stopped.
    let deadline = Instant::now() + secs(30);
    while c.status(l).await.unwrap()["purged_index"]
        .as_u64()
        .unwrap_or(0)
        < 100
    {
        assert!(Instant::now() < deadline, "leader never purged its log");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.spawn(lagging);
    let (_, rv) = kv.list("s/", false).await.unwrap();
    assert!(
        c.wait_rv(lagging, rv, secs(30)).await,
        "lagging master caught up\n{}",
        c.log_tail(lagging, 20)
    );
    assert_eq!(local_items(&c, lagging, "s/").await.len(), 150);
    assert!(
        metric(&c, lagging, "keelson_raft_snapshot_installs")
            .await
            .unwrap_or(0.0)
            >= 1.0,
        "it was filled by a snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_with_lost_disk_rejoins_as_new_member() {
    let bin = std::path::Path::new(BIN);
    let mut c = Cluster::start(bin, 3, &["--snapshot-every", "40", "--keep-logs", "0"]);
    let l = leader(&c).await;
    let kv = Kv::new(&c.url(l), secs(10));
    for i in 0..100 {
        kv.create(&format!("d/{i:03}"), "v").await.expect("write");
    }
    let lost = *c.ids().iter().find(|id| **id != l).unwrap();
    c.kill(lost);
    c.wipe(lost);
    // Remove the dead member, then add a new one with an empty data directory.
    let http = reqwest::Client::new();
    let r = http
        .delete(format!("{}/cluster/masters/{lost}", c.url(l)))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "remove: {}",
        r.text().await.unwrap()
    );
    c.forget(lost);
    let spec = c.declare_joiner(4);
    c.spawn(4);
    let r = http
        .post(format!("{}/cluster/masters", c.url(l)))
        .json(&json!({"id": 4, "raft": spec.raft.to_string(), "api": spec.api.to_string()}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "add: {}", r.text().await.unwrap());
    let (_, rv) = kv.list("d/", false).await.unwrap();
    assert!(
        c.wait_rv(4, rv, secs(30)).await,
        "new member filled\n{}",
        c.log_tail(4, 20)
    );
    assert_eq!(local_items(&c, 4, "d/").await.len(), 100);
    assert!(
        metric(&c, 4, "keelson_raft_snapshot_installs")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    let voters: BTreeSet<u64> = c.status(l).await.unwrap()["voters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    let mut want: BTreeSet<u64> = c.ids().into_iter().collect();
    want.remove(&lost);
    assert_eq!(voters, want);
    // The new member takes writes (forwarded) like any other.
    Kv::new(&c.url(4), secs(10))
        .create("d/through-4", "v")
        .await
        .expect("write through the new member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_all_masters_loses_no_acknowledged_write() {
    let mut c = Cluster::start(std::path::Path::new(BIN), 3, &[]);
    leader(&c).await;
    let urls = c.ids().iter().map(|id| c.url(*id)).collect();
    let writer = Writer::spawn(urls, "all/");
    writer.wait_more(150).await;
    for id in c.ids() {
        c.kill(id);
    }
    let acked = writer.stop().await;
    c.start_all();
    let l = leader(&c).await;
    assert_none_lost(&c.url(l), "all/", &acked).await;
    assert!(acked.len() >= 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compare_and_set_has_one_winner_per_version() {
    let c = Cluster::start(std::path::Path::new(BIN), 3, &[]);
    leader(&c).await;
    let clients: Vec<Kv> = (0..6)
        .map(|i| Kv::new(&c.url(c.ids()[i % 3]), secs(10)))
        .collect();
    let mut rv = clients[0].create("reg", "start").await.unwrap();
    for round in 0..8 {
        let attempts = clients.iter().enumerate().map(|(i, kv)| {
            let kv = kv.clone();
            async move { kv.update("reg", &format!("r{round}-c{i}"), Some(rv)).await }
        });
        let results = futures::future::join_all(attempts).await;
        let winners: Vec<u64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one winner, got {results:?}"
        );
        for r in &results {
            if let Err(e) = r {
                assert_eq!(e.code(), Some(409), "the losers get a conflict: {e}");
            }
        }
        rv = winners[0];
    }
    let (_, final_rv) = clients[1].get("reg", false).await.unwrap().unwrap();
    assert_eq!(final_rv, rv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_three_to_five_to_three_under_load() {
    let bin = std::path::Path::new(BIN);
    let mut c = Cluster::start(bin, 3, &[]);
    leader(&c).await;
    // Masters 2 and 3 stay members throughout; the writer uses them.
    let writer = Writer::spawn(vec![c.url(2), c.url(3)], "m/");
    writer.wait_more(30).await;
    let http = reqwest::Client::builder()
        .timeout(secs(90))
        .build()
        .unwrap();
    for id in [4, 5] {
        let spec = c.declare_joiner(id);
        c.spawn(id);
        let r = http
            .post(format!("{}/cluster/masters", c.url(2)))
            .json(&json!({"id": id, "raft": spec.raft.to_string(), "api": spec.api.to_string()}))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "add {id}: {}",
            r.text().await.unwrap()
        );
    }
    let voters = |s: serde_json::Value| -> BTreeSet<u64> {
        s["voters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_u64())
            .collect()
    };
    assert_eq!(
        voters(c.status(2).await.unwrap()),
        BTreeSet::from([1, 2, 3, 4, 5])
    );
    writer.wait_more(30).await;
    for id in [1, 4] {
        let r = http
            .delete(format!("{}/cluster/masters/{id}", c.url(3)))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "remove {id}: {}",
            r.text().await.unwrap()
        );
    }
    let l = leader(&c).await;
    assert_eq!(
        voters(c.status(l).await.unwrap()),
        BTreeSet::from([2, 3, 5])
    );
    writer.wait_more(30).await;
    let acked = writer.stop().await;

    // A removed master (still running) takes no writes.
    let removed = Kv::new(&c.url(1), secs(15));
    let err = removed
        .put("m/through-removed", "x")
        .await
        .expect_err("a removed master refuses writes");
    assert!(
        err.is_definite_failure(),
        "refused, not indeterminate: {err}"
    );

    let stored = assert_none_lost(&c.url(5), "m/", &acked).await;
    assert!(!stored.contains("m/through-removed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_from_a_version_on_any_master() {
    let c = Cluster::start(std::path::Path::new(BIN), 3, &[]);
    let l = leader(&c).await;
    let follower = *c.ids().iter().find(|id| **id != l).unwrap();
    let kv = Kv::new(&c.url(l), secs(5));
    let rv0 = kv.create("w/a", "1").await.unwrap();
    // A watch on a follower from rv0 sees the writes made through the leader, in order.
    let resp = reqwest::get(format!(
        "{}/kv?prefix=w/&watch=true&resourceVersion={rv0}",
        c.url(follower)
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let mut want = Vec::new();
    for i in 0..5 {
        want.push(kv.put(&format!("w/k{i}"), "v").await.unwrap());
    }
    want.push(kv.delete("w/a", None).await.unwrap());
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut got: Vec<(String, u64)> = Vec::new();
    let deadline = Instant::now() + secs(20);
    use futures::StreamExt;
    while got.len() < want.len() {
        let chunk = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            stream.next(),
        )
        .await
        .expect("events arrive in time")
        .expect("stream open")
        .unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let ev: serde_json::Value = serde_json::from_slice(&line).unwrap();
            got.push((
                ev["type"].as_str().unwrap().to_string(),
                ev["resourceVersion"].as_u64().unwrap(),
            ));
        }
    }
    let rvs: Vec<u64> = got.iter().map(|(_, rv)| *rv).collect();
    assert_eq!(rvs, want, "every write, in order, no gap");
    assert_eq!(got.last().unwrap().0, "DELETED");
    assert_eq!(got[0].0, "ADDED");
    // A version below the window is 410 Gone on a restarted master (its window starts at
    // what it had applied).
    let r = reqwest::get(format!(
        "{}/kv?prefix=w/&watch=true&resourceVersion=0",
        c.url(follower)
    ))
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        200,
        "resourceVersion=0 starts with the current state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_raft_port_is_refused_without_harm() {
    let c = Cluster::start(std::path::Path::new(BIN), 1, &[]);
    let l = leader(&c).await;
    let raft = c.spec(l).raft;
    // A caller with a valid peer certificate: what an authenticated peer may still send.
    let http = c.peer_client();
    let url = |p: &str| c.raft_url(l, p);
    let hdr = ("x-keelson-cluster", c.cluster_id.clone());
    for path in ["append", "vote", "snapshot", "write", "read_index", "admin"] {
        let r = http
            .post(url(path))
            .header(hdr.0, &hdr.1)
            .body(vec![0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}: garbage is a 400");
    }
    // A length prefix claiming a huge vector: decoding must not try to allocate it.
    let mut bomb = vec![0xfc];
    bomb.extend_from_slice(&u64::MAX.to_le_bytes());
    let r = http
        .post(url("write"))
        .header(hdr.0, &hdr.1)
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(url("append"))
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "missing cluster header");
    let r = http
        .post(url("append"))
        .header(hdr.0, "another-cluster")
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "another cluster is refused");
    let r = http
        .post(url("append"))
        .header(hdr.0, &hdr.1)
        .body(vec![0u8; 70 * 1024 * 1024])
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413, "oversized request");
    }
    // Raw bytes that are not HTTP at all, on both ports.
    for addr in [raft, c.spec(l).api] {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s
            .write_all(b"\x00\x01\x02 not http at all\r\n\r\n\xff\xfe")
            .await;
    }
    // Oversized API body, refused from its declared length.
    let code =
        keelson_chaos::client::status_of_declared_post(&c.url(l), "/kv/big", 4 * 1024 * 1024).await;
    assert_eq!(code, Some(413));
    // The master is unharmed and keeps working.
    let kv = Kv::new(&c.url(l), secs(5));
    kv.create("still", "alive")
        .await
        .expect("master still takes writes");
    assert_eq!(kv.get("still", false).await.unwrap().unwrap().0, "alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_of_another_master_or_cluster_is_refused() {
    let bin = std::path::Path::new(BIN);
    let mut c = Cluster::start(bin, 1, &[]);
    leader(&c).await;
    Kv::new(&c.url(1), secs(5))
        .create("keep", "me")
        .await
        .unwrap();
    let status = c.terminate(1).expect("exit status");
    assert!(
        status.success(),
        "SIGTERM stops a master cleanly: {status:?}\n{}",
        c.log_tail(1, 10)
    );
    let spec = c.spec(1).clone();
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .arg("master")
            // Loopback only: the data directory checks, not peer TLS, are under test here.
            .arg("--insecure-plaintext-peers")
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .args([
                "--raft-addr",
                &spec.raft.to_string(),
                "--api-addr",
                &spec.api.to_string(),
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let peers = format!("1={}/{}", spec.raft, spec.api);
    let other_cluster = run(&[
        "--id",
        "1",
        "--peers",
        &peers,
        "--cluster-id",
        "some-other-cluster",
    ]);
    assert!(!other_cluster.status.success());
    assert!(
        String::from_utf8_lossy(&other_cluster.stderr).contains("belongs to cluster"),
        "{}",
        String::from_utf8_lossy(&other_cluster.stderr)
    );
    let peers2 = format!("2={}/{}", spec.raft, spec.api);
    let other_id = run(&[
        "--id",
        "2",
        "--peers",
        &peers2,
        "--cluster-id",
        &c.cluster_id,
    ]);
    assert!(!other_id.status.success());
    assert!(
        String::from_utf8_lossy(&other_id.stderr).contains("belongs to master 1"),
        "{}",
        String::from_utf8_lossy(&other_id.stderr)
    );
    let conflicting = run(&[
        "--id",
        "1",
        "--peers",
        "1=127.0.0.1:1",
        "--cluster-id",
        &c.cluster_id,
    ]);
    assert!(!conflicting.status.success());
    assert!(String::from_utf8_lossy(&conflicting.stderr).contains("conflicting id"));
    // The rightful master restarts with its data, without re-initializing.
    c.spawn(1);
    leader(&c).await;
    assert_eq!(
        Kv::new(&c.url(1), secs(5))
            .get("keep", false)
            .await
            .unwrap()
            .unwrap()
            .0,
        "me"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_master_reports_leadership_in_metrics() {
    let mut c = Cluster::start(std::path::Path::new(BIN), 3, &[]);
    let l = leader(&c).await;
    let mut sum = 0.0;
    for id in c.ids() {
        sum += metric(&c, id, "keelson_raft_is_leader")
            .await
            .expect("metric present");
    }
    assert_eq!(sum, 1.0);
    // The parts of a write's latency: the leader times its appends (heartbeats are appends
    // too), and each follower the appends it serves.
    let sent = metric(
        &c,
        l,
        "keelson_raft_peer_round_trip_seconds_count{rpc=\"append\"}",
    )
    .await;
    assert!(sent.is_some_and(|n| n > 0.0), "leader's appends: {sent:?}");
    for id in c.ids().into_iter().filter(|id| *id != l) {
        let served = metric(&c, id, "keelson_raft_append_served_seconds_count").await;
        assert!(
            served.is_some_and(|n| n > 0.0),
            "master {id}'s served appends: {served:?}"
        );
    }
    let term = metric(&c, l, "keelson_raft_term").await.unwrap();
    c.kill(l);
    let l2 = leader(&c).await;
    let deadline = Instant::now() + secs(10);
    loop {
        let mut sum = 0.0;
        for id in c.running() {
            sum += metric(&c, id, "keelson_raft_is_leader")
                .await
                .unwrap_or(0.0);
        }
        if sum == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leadership sum never settled at 1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric(&c, l2, "keelson_raft_term").await.unwrap() > term);
    let _ = KvError::Transport(String::new());
}

/// SIGTERM of the leader under writes: it hands leadership to a caught-up follower before it
/// exits (keelson_raft::handover), and loses no acknowledged write.
async fn leader_stop_scenario(n: u64) {
    let mut c = Cluster::start(std::path::Path::new(BIN), n, &[]);
    let l1 = leader(&c).await;
    let term1 = c.status(l1).await.unwrap()["term"].as_u64().unwrap();
    let followers: Vec<u64> = c.ids().into_iter().filter(|id| *id != l1).collect();
    let urls = followers.iter().map(|id| c.url(*id)).collect();
    let writer = Writer::spawn(urls, "stop/");
    writer.wait_more(50).await;

    let status = c.terminate(l1).expect("exit status");
    assert!(
        status.success(),
        "the leader stops cleanly: {status:?}\n{}",
        c.log_tail(l1, 20)
    );
    let log = c.log_tail(l1, 200);
    let to: u64 = log
        .lines()
        .find_map(|l| l.split("handed leadership to master ").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("the leader handed over before it exited\n{log}"));
    assert!(followers.contains(&to), "handed to a follower, not {to}");
    let l2 = leader(&c).await;
    assert_eq!(l2, to, "the chosen follower leads");
    let term2 = c.status(l2).await.unwrap()["term"].as_u64().unwrap();
    if n == 3 {
        // The old leader's vote and the candidate's are a majority: one election, at once.
        assert_eq!(term2, term1 + 1, "one election, the hand-over's");
    } else {
        assert!(term2 > term1, "the term rose");
    }

    // Writes go on, and every acknowledged one is there.
    writer.wait_more(50).await;
    let acked = writer.stop().await;
    assert_none_lost(&c.url(l2), "stop/", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_of_three_hands_over_at_once() {
    leader_stop_scenario(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_of_five_hands_over_after_the_lease() {
    leader_stop_scenario(5).await;
}

/// Three masters started as docs/operations.md says, without `--cluster-id`: the id derived
/// from `--peers` is recorded, a leader is elected and writes work, and a restart without the
/// flag keeps the recorded id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_created_without_an_explicit_id_elects_and_keeps_its_derived_id() {
    use keelson_chaos::cluster::free_addr;
    use std::net::Ipv4Addr;
    struct Masters(Vec<std::process::Child>);
    impl Drop for Masters {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let root = tempfile::tempdir().unwrap();
    let ip = Ipv4Addr::LOCALHOST;
    let addrs: Vec<_> = (0..3).map(|_| (free_addr(ip), free_addr(ip))).collect();
    let peers: Vec<String> = (addrs.iter().enumerate())
        .map(|(i, (raft, api))| format!("{}={raft}/{api}", i + 1))
        .collect();
    let peers = peers.join(",");
    let start = |i: usize| {
        let (raft, api) = addrs[i];
        let log = std::fs::File::create(root.path().join(format!("m{}.log", i + 1))).unwrap();
        std::process::Command::new(BIN)
            .arg("master")
            .args(["--id", &(i + 1).to_string()])
            .arg("--data-dir")
            .arg(root.path().join(format!("d{}", i + 1)))
            .args([
                "--raft-addr",
                &raft.to_string(),
                "--api-addr",
                &api.to_string(),
            ])
            .args(["--peers", &peers, "--insecure-plaintext-peers"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let mut masters = Masters((0..3).map(start).collect());
    let url = |i: usize| format!("http://{}", addrs[i].1);
    let client = reqwest::Client::new();
    let status = |i: usize| {
        let req = client
            .get(format!("{}/cluster", url(i)))
            .timeout(Duration::from_millis(500));
        async move {
            req.send()
                .await
                .ok()?
                .json::<serde_json::Value>()
                .await
                .ok()
        }
    };
    let ids_and_leader = || async {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for i in 0..3 {
            let s = status(i).await?;
            ids.push(s["cluster_id"].as_str()?.to_string());
            leaders.push(s["leader"].as_u64()?);
        }
        Some((ids, leaders))
    };
    let deadline = Instant::now() + secs(30);
    let first = loop {
        if let Some((ids, leaders)) = ids_and_leader().await {
            if ids.iter().all(|id| *id == ids[0]) && leaders.iter().all(|l| *l == leaders[0]) {
                break ids[0].clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader and cluster id without --cluster-id:\n{}",
            std::fs::read_to_string(root.path().join("m1.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Kv::new(&url(1), secs(5))
        .create("derived", "id")
        .await
        .expect("a write through a follower or the leader");
    // Restarted without the flag, a master keeps the id it recorded.
    let _ = masters.0[2].kill();
    let _ = masters.0[2].wait();
    masters.0[2] = start(2);
    let deadline = Instant::now() + secs(30);
    loop {
        if let Some(s) = status(2).await {
            if s["leader"].as_u64().is_some() {
                assert_eq!(s["cluster_id"].as_str(), Some(first.as_str()));
                break;
            }
        }
        assert!(Instant::now() < deadline, "restarted master never rejoined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A follower stopped (SIGSTOP) for longer than any election timeout, under writes, then
/// resumed: its Raft core wakes with its election timer long passed and heartbeats still
/// queued. Without pre-vote (keelson_raft::prevote) it campaigns with a higher term and unseats
/// a healthy leader; with it, it asks the others first, who still hear the leader, and stays a
/// follower. The leader and the term are the same throughout, and the follower catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_paused_past_its_election_timeout_does_not_unseat_the_leader() {
    let c = Cluster::start(std::path::Path::new(BIN), 3, &[]);
    let l = leader(&c).await;
    let term = c.status(l).await.unwrap()["term"].as_u64().unwrap();
    let f = c.ids().into_iter().find(|id| *id != l).unwrap();
    let writer = Writer::spawn(vec![c.url(l)], "paused/");
    writer.wait_more(20).await;
    c.pause(f);
    // The stimulus, not a synchronisation: longer than the lease and the largest election
    // timeout together (120 + 120 ms by default), several times over.
    tokio::time::sleep(Duration::from_millis(800)).await;
    writer.wait_more(20).await;
    c.resume(f);
    writer.wait_more(20).await;
    let acked = writer.stop().await;
    let applied = c.status(l).await.unwrap()["applied_index"]
        .as_u64()
        .unwrap();
    assert!(
        c.wait_applied(f, applied, secs(10)).await,
        "the resumed follower catches up\n{}",
        c.log_tail(f, 20)
    );
    for id in c.ids() {
        let s = c.status(id).await.unwrap();
        assert_eq!(
            s["term"].as_u64(),
            Some(term),
            "master {id}: {s}\n{}",
            c.log_tail(f, 30)
        );
        assert_eq!(s["leader"].as_u64(), Some(l), "master {id}: {s}");
    }
    assert_none_lost(&c.url(l), "paused/", &acked).await;
}

/// `GET /cluster` of master `id` says it serves: it knows a leader and has applied its log.
async fn wait_ready(c: &Cluster, id: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if c.status(id).await.is_some_and(|s| s["ready"] == true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "master {id} not ready after {within:?}\n{}",
            c.log_tail(id, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A rolling restart — an upgrade is the same steps with the new binary — under a write load:
/// each master in turn stops (SIGTERM: a leader hands over first, requests in flight finish),
/// starts again and catches up. A client that retries refused connections and 503s on the next
/// master, and never retries an indeterminate write, sees every write succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_write_load_fails_no_write() {
    use common::writer::Options;
    let mut c = Cluster::start(std::path::Path::new(BIN), 3, &[]);
    leader(&c).await;
    let urls = c.ids().iter().map(|id| c.url(*id)).collect();
    let options = Options {
        retry: true,
        fresh_connections: true,
        ..Options::default()
    };
    let writer = Writer::spawn_with(urls, "roll/", options);
    writer.wait_more(100).await;
    for id in c.ids() {
        let status = c.terminate(id).expect("it was running");
        assert!(
            status.success(),
            "master {id} stops cleanly: {status:?}\n{}",
            c.log_tail(id, 30)
        );
        c.spawn(id);
        wait_ready(&c, id, secs(60)).await;
        writer.wait_more(100).await;
    }
    let (acked, report) = writer.stop_with_report().await;
    assert!(
        report.failed.is_empty(),
        "{} of {} writes failed, e.g. {:?}",
        report.failed.len(),
        acked.len() + report.failed.len(),
        &report.failed[..report.failed.len().min(5)]
    );
    let l = leader(&c).await;
    assert_none_lost(&c.url(l), "roll/", &acked).await;
    // Reported, not asserted (tests never fail on timing): docs/operations.md quotes it.
    eprintln!(
        "rolling restart of 3 masters: {} writes, none failed; latency p50 {:?}, p99 {:?}, max {:?}",
        acked.len(),
        report.quantile(0.5),
        report.quantile(0.99),
        report.quantile(1.0)
    );
}

/// A master whose data directory is on a 24 MiB tmpfs fills it under a write load: it stops
/// its storage, answers every request with a 507 naming itself and "no space", raises its
/// alarm metric and serves no state; the others go on. Once space is freed it exits (75) for
/// its supervisor — here the test — to start it again, and it catches up: no acknowledged write
/// is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_out_of_disk_space_refuses_requests_and_restarts_once_space_is_freed() {
    use common::writer::Options;
    if !Tmpfs::can_mount() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // Declared before the cluster: dropped (unmounted) after its masters are killed.
    let disk = Tmpfs::mount(&root.path().join("master-2"), "24m");
    let mut c = Cluster::new_in(std::path::Path::new(BIN), root.path(), 3, &[]);
    assert_eq!(c.spec(2).data_dir, disk.0);
    c.start_all();
    leader(&c).await;
    // 64 KiB values through masters 1 and 3: master 2 holds them all, on its small disk.
    let options = Options {
        value_bytes: 64 << 10,
        ..Options::default()
    };
    let writer = Writer::spawn_with(vec![c.url(1), c.url(3)], "full/", options);
    let deadline = Instant::now() + secs(180);
    let failure = loop {
        if let Some(f) = c.status(2).await.and_then(|s| {
            s["storage_failure"]
                .is_object()
                .then(|| s["storage_failure"].clone())
        }) {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "master 2's storage never failed ({} writes)\n{}",
            writer.count(),
            c.log_tail(2, 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "master 2's storage failed after {} acknowledged writes: {failure}",
        writer.count()
    );
    assert_eq!(failure["no_space"], true, "{failure}");
    assert!(!c.has_exited(2), "master 2 exited while its disk is full");
    // It says so, and neither leads nor names a leader (agents and clients go elsewhere).
    let status = c.status(2).await.unwrap();
    assert_eq!(status["state"], "Stopped", "{status}");
    assert!(status["leader"].is_null(), "{status}");

    // Every request but health, metrics and its status: 507, naming the master and the cause.
    let http = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/api/v1/namespaces/default/pods"),
        ("POST", "/kv/full-refused"),
        ("GET", "/kv/full/000000"),
    ] {
        let r = http
            .request(method.parse().unwrap(), format!("{}{path}", c.url(2)))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 507, "{method} {path}");
        let s: serde_json::Value = r.json().await.unwrap();
        assert_eq!(s["kind"], "Status", "{s}");
        assert_eq!(s["reason"], "InsufficientStorage", "{s}");
        let message = s["message"].as_str().unwrap();
        assert!(
            message.starts_with("no space: master 2 ran out of disk space"),
            "{message}"
        );
    }
    let r = http
        .get(format!("{}/readyz", c.url(2)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        metric(&c, 2, "keelson_raft_alarm_disk_full").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&c, 1, "keelson_raft_alarm_disk_full").await,
        Some(0.0)
    );
    // The others go on.
    writer.wait_more(20).await;

    // Space freed: master 2 exits for its supervisor, which starts it again.
    disk.resize("512m");
    let deadline = Instant::now() + secs(30);
    let status = loop {
        if let Some(status) = c.exited(2) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "master 2 did not exit once space was freed\n{}",
            c.log_tail(2, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(75), "{}", c.log_tail(2, 30));
    writer.wait_more(20).await;
    c.spawn(2);
    wait_ready(&c, 2, secs(90)).await;
    let acked = writer.stop().await;
    // Nothing acknowledged is lost: on the cluster, and on master 2's own replica once it has
    // caught up.
    let l = leader(&c).await;
    let stored = assert_none_lost(&c.url(l), "full/", &acked).await;
    let rv = c.status(l).await.unwrap()["applied_index"]
        .as_u64()
        .unwrap();
    assert!(c.wait_applied(2, rv, secs(90)).await, "master 2 caught up");
    let local = local_items(&c, 2, "full/").await;
    let local: BTreeSet<String> = local.into_keys().collect();
    assert_eq!(local, stored, "master 2's replica");
}
