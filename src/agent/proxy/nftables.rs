//! The kernel proxy (`--proxy-mode nftables`, the default where the host allows it): services as
//! nftables rules, in the shape of kube-proxy's nftables mode.
//!
//! The agent owns one table, `ip keelson-<cluster>-<node>` (several agents share one kernel in
//! tests, and two clusters may share one engine): nothing outside it is touched, Docker's rules
//! included. In it:
//! - a verdict map `services` from `address . protocol . port` to the service port's chain, for
//!   the node's address (the seed's "port 10000 on every node") and the service's cluster IP,
//!   looked up from `prerouting` (pods, other hosts) and `output` (this host) at `dstnat`;
//! - per service port a chain spreading new connections over its endpoints at random
//!   (`numgen random mod N vmap`), and per endpoint a chain that DNATs to the pod's IP and
//!   container port, so neither a userspace copy nor docker-proxy is on the path;
//! - a mark for masquerading, set for connections from 127.0.0.0/8 (which need
//!   `route_localnet` to leave the loopback device at all) and for a pod reaching itself through
//!   its service (hairpin), masqueraded at `srcnat`;
//! - a set `no-endpoints` of service addresses with no endpoint, whose new connections are
//!   rejected (the client gets "connection refused" at once rather than a timeout).
//!
//! The first sync renders the whole table and replaces it in one `nft -f` transaction (add,
//! delete, define), so a restarted agent rebuilds exactly what its services call for; later
//! syncs write only what changed (map and set elements, chains), also in one transaction. Either
//! way the kernel switches from the old rules to the new ones atomically: no packet sees a
//! half-written table. A transaction that fails makes the next sync a whole replacement.
//! Connections already open keep their NAT binding (conntrack), whatever the rules become. A
//! clean stop deletes the table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::services::ServicePort;

/// The bit of the packet mark that asks `srcnat` to masquerade (kube-proxy's).
const MASQUERADE_MARK: &str = "0x00004000";

/// A rendered table: what its map, set and chains hold, and the rules each service got.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ruleset {
    /// The `services` map: `address . protocol . port` → `goto CHAIN`.
    pub services: BTreeMap<String, String>,
    /// The `no-endpoints` set: `address . protocol . port`.
    pub rejected: BTreeSet<String>,
    /// The service and endpoint chains: name → rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Rules (map elements and chain rules) per service, `namespace/name`.
    pub rules: BTreeMap<String, usize>,
    /// Service addresses dropped because an earlier service port already holds them (two
    /// services with one port on the node's address).
    pub conflicts: Vec<String>,
}

/// The table's name for `cluster` (its id) and `node`: letters, digits, `-` and `_` only.
pub fn table_name(cluster: &str, node: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let cluster: String = clean(cluster).chars().take(12).collect();
    format!("keelson-{cluster}-{}", clean(node))
}

/// A chain name nftables takes unquoted: letters, digits and `/ - _ .`.
fn chain(parts: &[&str]) -> String {
    parts
        .join("/")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "/-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether traffic may be DNATed to `ip`: an endpoint is a pod (or a node's loopback address in
/// the userspace mode's endpoints), never an unspecified, multicast, broadcast or link-local
/// address (169.254.169.254 is a cloud's metadata service) that hand-written Endpoints name.
fn endpoint_allowed(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_link_local())
}

/// Renders the table for `ports`, with `node` the node's address (`None`: only cluster IPs).
pub fn render(node: Option<Ipv4Addr>, ports: &[ServicePort]) -> Ruleset {
    let mut r = Ruleset::default();
    for p in ports {
        let proto = p.protocol.as_str();
        let svc_chain = chain(&["svc", &p.service, proto, &p.port.to_string()]);
        let backends: Vec<(Ipv4Addr, u16)> = p
            .backends
            .iter()
            .filter_map(|b| Some((b.host.parse::<Ipv4Addr>().ok()?, b.port)))
            .filter(|(ip, _)| endpoint_allowed(*ip))
            .collect();
        let count = r.rules.entry(p.service.clone()).or_default();
        for addr in node.into_iter().chain(p.cluster_ip) {
            let key = format!("{addr} . {proto} . {}", p.port);
            if r.services.contains_key(&key) || r.rejected.contains(&key) {
                r.conflicts.push(format!("{key} ({})", p.service));
                continue;
            }
            *count += 1;
            if backends.is_empty() {
                r.rejected.insert(key);
            } else {
                r.services.insert(key, format!("goto {svc_chain}"));
            }
        }
        if backends.is_empty() {
            continue;
        }
        let mut targets = Vec::new();
        for (ip, port) in &backends {
            let ep_chain = chain(&[
                "ep",
                &p.service,
                proto,
                &p.port.to_string(),
                &ip.to_string(),
                &port.to_string(),
            ]);
            r.chains.insert(
                ep_chain.clone(),
                vec![
                    format!("ip saddr 127.0.0.0/8 meta mark set meta mark | {MASQUERADE_MARK}"),
                    format!("ip saddr {ip} meta mark set meta mark | {MASQUERADE_MARK}"),
                    format!("meta l4proto {proto} dnat ip to {ip}:{port}"),
                ],
            );
            *count += 3;
            targets.push(ep_chain);
        }
        let spread = if targets.len() == 1 {
            format!("goto {}", targets[0])
        } else {
            let arms: Vec<String> = targets
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{i} : goto {t}"))
                .collect();
            format!(
                "numgen random mod {} vmap {{ {} }}",
                targets.len(),
                arms.join(", ")
            )
        };
        r.chains.insert(svc_chain, vec![spread]);
        *count += 1;
    }
    r
}

impl Ruleset {
    /// The whole table `table`'s definition.
    pub fn text(&self, table: &str) -> String {
        let key_type = "ipv4_addr . inet_proto . inet_service";
        let mut text = format!("table ip {table} {{\n");
        let elements: Vec<String> = self
            .services
            .iter()
            .map(|(k, v)| format!("{k} : {v}"))
            .collect();
        let _ = writeln!(
            text,
            "\tmap services {{\n\t\ttype {key_type} : verdict\n{}\t}}",
            elements_line(elements.iter())
        );
        let _ = writeln!(
            text,
            "\tset no-endpoints {{\n\t\ttype {key_type}\n{}\t}}",
            elements_line(self.rejected.iter())
        );
        text.push_str(
            "\tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @services\n\t}\n",
        );
        // -100 is `dstnat`, a name nftables 1.0 takes for prerouting only.
        for hook in ["prerouting", "output"] {
            let _ = writeln!(
                text,
                "\tchain nat-{hook} {{\n\t\ttype nat hook {hook} priority -100; policy accept;\n\t\tjump services\n\t}}"
            );
        }
        let _ = writeln!(
            text,
            "\tchain nat-postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tmeta mark & {MASQUERADE_MARK} == 0 return\n\
             \t\tmeta mark set meta mark ^ {MASQUERADE_MARK}\n\
             \t\tmasquerade\n\t}}"
        );
        for hook in ["input", "forward", "output"] {
            // With route_localnet on, only this host may reach 127.0.0.0/8: a packet from
            // elsewhere to it is dropped unless it belongs to a connection already made
            // (kube-proxy's guard against CVE-2020-8558).
            let guard = if hook == "input" {
                "\t\tip saddr != 127.0.0.0/8 ip daddr 127.0.0.0/8 ct state != { established, related } ct status & dnat == 0 drop\n"
            } else {
                ""
            };
            let _ = writeln!(
                text,
                "\tchain filter-{hook} {{\n\t\ttype filter hook {hook} priority filter; policy accept;\n\
                 {guard}\t\tct state new ip daddr . meta l4proto . th dport @no-endpoints reject\n\t}}"
            );
        }
        for (name, rules) in &self.chains {
            let _ = writeln!(text, "\tchain {name} {{");
            for rule in rules {
                let _ = writeln!(text, "\t\t{rule}");
            }
            text.push_str("\t}\n");
        }
        text.push_str("}\n");
        text
    }

    /// The transaction that turns table `table`, holding `old`, into this ruleset: only what
    /// changed (kube-proxy's nftables mode does the same), so a change of one service costs
    /// in proportion to it, not to the table. Empty when nothing changed.
    pub fn update_from(&self, old: &Ruleset, table: &str) -> String {
        let mut out = String::new();
        let t = format!("ip {table}");
        // Elements that go or change first (a changed verdict is deleted, then added).
        let gone: Vec<&String> = old
            .services
            .iter()
            .filter(|(k, v)| self.services.get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        if !gone.is_empty() {
            let _ = writeln!(out, "delete element {t} services {{ {} }}", join(gone));
        }
        let gone: Vec<&String> = old.rejected.difference(&self.rejected).collect();
        if !gone.is_empty() {
            let _ = writeln!(out, "delete element {t} no-endpoints {{ {} }}", join(gone));
        }
        // New chains exist before any rule names them; changed ones are emptied and refilled.
        for name in self.chains.keys().filter(|n| !old.chains.contains_key(*n)) {
            let _ = writeln!(out, "add chain {t} {name}");
        }
        for (name, rules) in &self.chains {
            match old.chains.get(name) {
                Some(before) if before == rules => continue,
                Some(_) => {
                    let _ = writeln!(out, "flush chain {t} {name}");
                }
                None => {}
            }
            for rule in rules {
                let _ = writeln!(out, "add rule {t} {name} {rule}");
            }
        }
        let added: Vec<String> = self
            .services
            .iter()
            .filter(|(k, v)| old.services.get(*k) != Some(v))
            .map(|(k, v)| format!("{k} : {v}"))
            .collect();
        if !added.is_empty() {
            let _ = writeln!(out, "add element {t} services {{ {} }}", join(&added));
        }
        let added: Vec<&String> = self.rejected.difference(&old.rejected).collect();
        if !added.is_empty() {
            let _ = writeln!(out, "add element {t} no-endpoints {{ {} }}", join(added));
        }
        // Chains no longer wanted: emptied first (a service chain names its endpoints'), then
        // deleted.
        let gone: Vec<&String> = old
            .chains
            .keys()
            .filter(|n| !self.chains.contains_key(*n))
            .collect();
        for name in &gone {
            let _ = writeln!(out, "flush chain {t} {name}");
        }
        for name in &gone {
            let _ = writeln!(out, "delete chain {t} {name}");
        }
        out
    }
}

fn join<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    items
        .into_iter()
        .map(|s| s.as_ref().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn elements_line<S: AsRef<str>>(elements: impl Iterator<Item = S>) -> String {
    let all = join(elements);
    if all.is_empty() {
        String::new()
    } else {
        format!("\t\telements = {{ {all} }}\n")
    }
}

/// The `nft` program, run for one table.
#[derive(Debug, Clone)]
pub struct Nft {
    pub table: String,
}

impl Nft {
    /// Runs `nft -f -` with `script` on its standard input: one transaction.
    async fn run(script: &str) -> Result<(), String> {
        let mut child = tokio::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("run nft: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped");
        let write = stdin.write_all(script.as_bytes()).await;
        drop(stdin);
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| format!("nft: {e}"))?;
        if out.status.success() {
            write.map_err(|e| format!("nft: write the rules: {e}"))
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let first: Vec<&str> = err.lines().take(6).collect();
            Err(format!(
                "nft -f failed ({}): {}",
                out.status,
                first.join(" | ")
            ))
        }
    }

    /// Whether this host lets the agent manage nftables: `nft` runs, and a table can be
    /// created and deleted (CAP_NET_ADMIN). The reason when not.
    pub async fn probe(&self) -> Result<(), String> {
        // Not the table itself: a restarted agent's rules serve on until its first sync.
        let t = format!("{}-probe", self.table);
        Self::run(&format!("table ip {t}\ndelete table ip {t}\n")).await
    }

    /// Whether the table is in the kernel (something outside may have flushed the ruleset).
    pub async fn exists(&self) -> bool {
        tokio::process::Command::new("nft")
            .args(["list", "chain", "ip", &self.table, "services"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success())
    }

    /// Replaces the table with `ruleset`, atomically.
    pub async fn replace(&self, ruleset: &Ruleset) -> Result<(), String> {
        let t = &self.table;
        Self::run(&format!(
            "table ip {t}\ndelete table ip {t}\n{}",
            ruleset.text(t)
        ))
        .await
    }

    /// Turns the table from `old` into `new` in one transaction: only what changed.
    pub async fn update(&self, old: &Ruleset, new: &Ruleset) -> Result<(), String> {
        let script = new.update_from(old, &self.table);
        if script.is_empty() {
            return Ok(());
        }
        Self::run(&script).await
    }

    /// Deletes the table (none is fine).
    pub async fn remove(&self) -> Result<(), String> {
        let t = &self.table;
        Self::run(&format!("table ip {t}\ndelete table ip {t}\n")).await
    }
}

/// Lets packets with a 127.0.0.0/8 source leave the loopback device once DNAT sends them to a
/// pod (`net.ipv4.conf.all.route_localnet`, as kube-proxy sets it): without it the kernel drops
/// them as martians. Only needed when the node's address is a loopback one.
pub fn allow_localnet() -> Result<(), String> {
    let path = "/proc/sys/net/ipv4/conf/all/route_localnet";
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|e| format!("set {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::services::{Backend, Protocol};
    use super::*;

    fn port(
        service: &str,
        port: u16,
        ip: Option<[u8; 4]>,
        backends: &[(&str, u16)],
    ) -> ServicePort {
        ServicePort {
            service: service.into(),
            name: String::new(),
            protocol: Protocol::Tcp,
            port,
            cluster_ip: ip.map(Ipv4Addr::from),
            backends: backends
                .iter()
                .map(|(h, p)| Backend {
                    host: h.to_string(),
                    port: *p,
                })
                .collect(),
        }
    }

    /// `nft [-c] -f -`: with `check`, the kernel checks the whole transaction and nothing is
    /// applied.
    fn nft(script: &str, check: bool) {
        use std::io::Write;
        let mut child = std::process::Command::new("nft")
            .args(if check {
                &["-c", "-f", "-"][..]
            } else {
                &["-f", "-"][..]
            })
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft (apt install nftables)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft refused: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            script.lines().take(40).collect::<Vec<_>>().join("\n")
        );
    }

    fn list(table: &str) -> String {
        let out = std::process::Command::new("nft")
            .args(["list", "table", "ip", table])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A listed table in a form that does not depend on the order chains were added or elements
    /// stored in: whitespace collapsed, the table named T, chains and set elements sorted.
    fn normalize(listed: &str, name: &str) -> Vec<String> {
        let flat = listed
            .replace(name, "T")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let flat = flat.strip_suffix(" }").unwrap_or(&flat);
        let mut parts: Vec<String> = flat
            .split(" chain ")
            .map(|part| {
                let mut out = part.to_string();
                let mut from = 0;
                while let Some(i) = out[from..].find("elements = { ") {
                    let start = from + i + "elements = { ".len();
                    let end = start + out[start..].find(" }").expect("closed");
                    let mut items: Vec<String> =
                        out[start..end].split(", ").map(str::to_string).collect();
                    items.sort();
                    let joined = items.join(", ");
                    out.replace_range(start..end, &joined);
                    from = start + joined.len();
                }
                out
            })
            .collect();
        parts.sort();
        parts
    }

    fn big(services: u32, endpoints: u32, shift: u32) -> Vec<ServicePort> {
        (0..services)
            .map(|i| ServicePort {
                service: format!("big/svc-{i}"),
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 20000 + i as u16,
                cluster_ip: Some(Ipv4Addr::from(0x0a60_0000 + i + 1)),
                backends: (0..endpoints)
                    .map(|e| Backend {
                        host: Ipv4Addr::from(0xac1e_0000 + i * endpoints + e + 2 + shift)
                            .to_string(),
                        port: 80,
                    })
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn rendered_tables_pass_the_kernels_check() {
        let t = "keelson-check";
        let replace = |r: &Ruleset| format!("table ip {t}\ndelete table ip {t}\n{}", r.text(t));
        let node = Some(Ipv4Addr::new(127, 0, 0, 11));
        let mut seed = port(
            "default/mysite",
            10000,
            Some([10, 96, 0, 9]),
            &[("172.30.0.2", 80), ("172.30.0.3", 80)],
        );
        let one = port(
            "default/one",
            81,
            Some([10, 96, 0, 10]),
            &[("172.30.0.4", 8080)],
        );
        let none = port("default/none", 82, Some([10, 96, 0, 11]), &[]);
        nft(&replace(&render(node, &[seed.clone(), one, none])), true);
        seed.protocol = Protocol::Udp;
        nft(&replace(&render(None, &[seed])), true);
        // 1,000 services of 10 endpoints each: rendered and checked whole.
        let started = std::time::Instant::now();
        let r = render(node, &big(1000, 10, 0));
        let rendered = started.elapsed();
        nft(&replace(&r), true);
        println!(
            "1,000 services x 10 endpoints: {} rules, {} bytes, rendered in {rendered:?}, render + nft -c in {:?}",
            r.rules.values().sum::<usize>(),
            r.text(t).len(),
            started.elapsed()
        );
    }

    /// Updates applied to a real table (no traffic is sent to its addresses) leave exactly
    /// what a whole replacement would: services and endpoints added, changed and removed.
    #[test]
    fn updates_write_only_what_changed_and_match_a_replacement() {
        let t = format!("keelson-unittest-{}", std::process::id());
        /// Deletes the test's tables however the test ends.
        struct Cleanup(String);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                for t in [self.0.clone(), format!("{}-fresh", self.0)] {
                    let _ = std::process::Command::new("nft")
                        .args(["delete", "table", "ip", &t])
                        .output();
                }
            }
        }
        let _cleanup = Cleanup(t.clone());
        let node = Some(Ipv4Addr::new(127, 0, 0, 11));
        let steps: Vec<Vec<ServicePort>> = vec![
            big(3, 2, 0),
            // An endpoint more for one service, one service gone, one without endpoints.
            {
                let mut v = big(3, 2, 0);
                v[0].backends.push(Backend {
                    host: "172.30.9.9".into(),
                    port: 80,
                });
                v.remove(1);
                v[1].backends.clear();
                v
            },
            // Endpoints back, another service, the port of one changed.
            {
                let mut v = big(4, 1, 100);
                v[2].port = 30002;
                v
            },
            Vec::new(),
            big(2, 3, 7),
        ];
        let mut applied = render(node, &steps[0]);
        nft(
            &format!("table ip {t}\ndelete table ip {t}\n{}", applied.text(&t)),
            false,
        );
        for step in &steps[1..] {
            let next = render(node, step);
            let script = next.update_from(&applied, &t);
            nft(&script, false);
            let updated = list(&t);
            // The same as the table written whole.
            let fresh = format!("{t}-fresh");
            nft(
                &format!(
                    "table ip {fresh}\ndelete table ip {fresh}\n{}",
                    next.text(&fresh)
                ),
                false,
            );
            let fresh_text = list(&fresh);
            nft(&format!("delete table ip {fresh}\n"), false);
            assert_eq!(
                normalize(&updated, &t),
                normalize(&fresh_text, &fresh),
                "after {script}"
            );
            applied = next;
        }
        assert_eq!(render(node, &steps[4]).update_from(&applied, &t), "");
    }
    #[test]
    fn table_names_are_scoped_and_clean() {
        assert_eq!(
            table_name("0123456789abcdef", "node 1"),
            "keelson-0123456789ab-node_1"
        );
    }

    #[test]
    fn renders_maps_spread_dnat_and_rejects() {
        let node = Some(Ipv4Addr::new(127, 0, 0, 11));
        let ports = [
            port(
                "default/mysite",
                10000,
                Some([172, 31, 0, 5]),
                &[("172.30.0.2", 80), ("172.30.0.3", 80), ("somehost", 80)],
            ),
            port("default/empty", 81, Some([172, 31, 0, 6]), &[]),
            port("default/clash", 10000, None, &[("172.30.0.9", 80)]),
        ];
        let r = render(node, &ports);
        let t = &r.text("keelson-c-n1");
        assert!(t.starts_with("table ip keelson-c-n1 {\n"), "{t}");
        assert!(
            t.contains("127.0.0.11 . tcp . 10000 : goto svc/default/mysite/tcp/10000"),
            "{t}"
        );
        assert!(
            t.contains("172.31.0.5 . tcp . 10000 : goto svc/default/mysite/tcp/10000"),
            "{t}"
        );
        assert!(t.contains("numgen random mod 2 vmap { 0 : goto ep/default/mysite/tcp/10000/172.30.0.2/80, 1 : goto ep/default/mysite/tcp/10000/172.30.0.3/80 }"), "{t}");
        assert!(
            t.contains("meta l4proto tcp dnat ip to 172.30.0.3:80"),
            "{t}"
        );
        assert!(t.contains("ip saddr 172.30.0.2 meta mark set"), "{t}");
        // No endpoints: both addresses rejected, no chain.
        assert!(
            t.contains("elements = { 127.0.0.11 . tcp . 81, 172.31.0.6 . tcp . 81 }"),
            "{t}"
        );
        assert!(!t.contains("svc/default/empty"), "{t}");
        // The node port another service holds is not taken twice.
        assert_eq!(r.conflicts, ["127.0.0.11 . tcp . 10000 (default/clash)"]);
        assert_eq!(r.rules["default/mysite"], 2 + 1 + 2 * 3);
        assert_eq!(r.rules["default/empty"], 2);
        assert_eq!(r.rules["default/clash"], 1 + 3);
        // Deterministic: the same input renders the same text.
        assert_eq!(render(node, &ports), r);
        // Nothing at all still makes a valid, empty table.
        let empty = render(None, &[]).text("keelson-c-n1");
        assert!(!empty.contains("elements"), "{empty}");
    }
}
