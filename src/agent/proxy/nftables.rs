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
//! Every sync renders the whole table and replaces it in one `nft -f` transaction (add, delete,
//! define): the kernel switches from the old rules to the new ones atomically, so no packet sees
//! a half-written table, and a restarted agent rebuilds exactly what its services call for.
//! Connections already open keep their NAT binding (conntrack), whatever the rules become. A
//! clean stop deletes the table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::services::ServicePort;

/// The bit of the packet mark that asks `srcnat` to masquerade (kube-proxy's).
const MASQUERADE_MARK: &str = "0x00004000";

/// A rendered table: the `nft -f` text and the rules each service got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// The whole table's definition (without the add/delete preamble).
    pub text: String,
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

/// Renders table `table` for `ports`, with `node` the node's address (`None`: only cluster IPs).
pub fn render(table: &str, node: Option<Ipv4Addr>, ports: &[ServicePort]) -> Ruleset {
    let mut rules: BTreeMap<String, usize> = BTreeMap::new();
    let mut conflicts = Vec::new();
    let mut taken = std::collections::HashSet::new();
    let mut elements = Vec::new();
    let mut rejected = Vec::new();
    let mut chains = String::new();
    for p in ports {
        let proto = p.protocol.as_str();
        let svc_chain = chain(&["svc", &p.service, proto, &p.port.to_string()]);
        let backends: Vec<(Ipv4Addr, u16)> = p
            .backends
            .iter()
            .filter_map(|b| Some((b.host.parse::<Ipv4Addr>().ok()?, b.port)))
            .collect();
        let count = rules.entry(p.service.clone()).or_default();
        for addr in node.into_iter().chain(p.cluster_ip) {
            let key = format!("{addr} . {proto} . {}", p.port);
            if !taken.insert(key.clone()) {
                conflicts.push(format!("{key} ({})", p.service));
                continue;
            }
            *count += 1;
            if backends.is_empty() {
                rejected.push(key);
            } else {
                elements.push(format!("{key} : goto {svc_chain}"));
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
            let _ = writeln!(
                chains,
                "\tchain {ep_chain} {{\n\
                 \t\tip saddr 127.0.0.0/8 meta mark set meta mark | {MASQUERADE_MARK}\n\
                 \t\tip saddr {ip} meta mark set meta mark | {MASQUERADE_MARK}\n\
                 \t\tmeta l4proto {proto} dnat ip to {ip}:{port}\n\
                 \t}}"
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
        let _ = writeln!(chains, "\tchain {svc_chain} {{\n\t\t{spread}\n\t}}");
        *count += 1;
    }
    let key_type = "ipv4_addr . inet_proto . inet_service";
    let mut text = format!("table ip {table} {{\n");
    let _ = writeln!(
        text,
        "\tmap services {{\n\t\ttype {key_type} : verdict\n{}\t}}",
        elements_line(&elements)
    );
    let _ = writeln!(
        text,
        "\tset no-endpoints {{\n\t\ttype {key_type}\n{}\t}}",
        elements_line(&rejected)
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
        let _ = writeln!(
            text,
            "\tchain filter-{hook} {{\n\t\ttype filter hook {hook} priority filter; policy accept;\n\
             \t\tct state new ip daddr . meta l4proto . th dport @no-endpoints reject\n\t}}"
        );
    }
    text.push_str(&chains);
    text.push_str("}\n");
    Ruleset {
        text,
        rules,
        conflicts,
    }
}

fn elements_line(elements: &[String]) -> String {
    if elements.is_empty() {
        String::new()
    } else {
        format!("\t\telements = {{ {} }}\n", elements.join(", "))
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
        let t = &self.table;
        Self::run(&format!("table ip {t}\ndelete table ip {t}\n")).await
    }

    /// Replaces the table with `ruleset`, atomically.
    pub async fn apply(&self, ruleset: &Ruleset) -> Result<(), String> {
        let t = &self.table;
        Self::run(&format!(
            "table ip {t}\ndelete table ip {t}\n{}",
            ruleset.text
        ))
        .await
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

    /// `nft -c -f -`: the kernel checks the whole transaction, nothing is applied.
    fn nft_check(script: &str) {
        use std::io::Write;
        let mut child = std::process::Command::new("nft")
            .args(["-c", "-f", "-"])
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
            "nft refused the table: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn rendered_tables_pass_the_kernels_check() {
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
        let script = |r: &Ruleset| {
            format!(
                "table ip t\ndelete table ip t\n{}",
                r.text.replacen("table ip keelson-check", "table ip t", 1)
            )
        };
        nft_check(&script(&render(
            "keelson-check",
            node,
            &[seed.clone(), one, none],
        )));
        seed.protocol = Protocol::Udp;
        nft_check(&script(&render("keelson-check", None, &[seed])));
        // 1,000 services of 10 endpoints each: rendered and checked whole.
        let big: Vec<ServicePort> = (0..1000u32)
            .map(|i| ServicePort {
                service: format!("big/svc-{i}"),
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 20000 + i as u16,
                cluster_ip: Some(Ipv4Addr::from(0x0a60_0000 + i + 1)),
                backends: (0..10u32)
                    .map(|e| Backend {
                        host: Ipv4Addr::from(0xac1e_0000 + i * 10 + e + 2).to_string(),
                        port: 80,
                    })
                    .collect(),
            })
            .collect();
        let started = std::time::Instant::now();
        let r = render("keelson-check", node, &big);
        let rendered = started.elapsed();
        nft_check(&script(&r));
        println!(
            "1,000 services x 10 endpoints: {} rules, {} bytes, rendered in {rendered:?}, render + nft -c in {:?}",
            r.rules.values().sum::<usize>(),
            r.text.len(),
            started.elapsed()
        );
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
        let r = render("keelson-c-n1", node, &ports);
        let t = &r.text;
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
        assert_eq!(render("keelson-c-n1", node, &ports), r);
        // Nothing at all still makes a valid, empty table.
        let empty = render("keelson-c-n1", None, &[]);
        assert!(!empty.text.contains("elements"), "{}", empty.text);
    }
}
