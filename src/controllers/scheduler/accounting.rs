//! What each node has committed to, kept incrementally: every pod bound to a node (and not
//! finished) adds its requests, host ports and controller to the node's usage, and takes them
//! back when it changes or goes, exactly what it added (so usage never drifts).
//!
//! A placement the scheduler decided but whose binding is not yet in the caches is *assumed*
//! (kube-scheduler's assume cache): counted at once, so the next decisions see it; its binding
//! event replaces it with the same contribution; a binding that failed is forgotten.

use std::collections::HashMap;

use crate::informer::pod::{PodFacts, Resources};

/// What one pod adds to its node.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    pub node: String,
    pub requests: Resources,
    pub host_ports: Vec<i64>,
    pub controller: Option<String>,
}

impl Contribution {
    /// What `pod` adds, placed on `node`.
    pub fn of(pod: &PodFacts, node: &str) -> Self {
        Contribution {
            node: node.to_string(),
            requests: pod.requests,
            host_ports: pod.host_ports.clone(),
            controller: pod.controller_uid().map(str::to_string),
        }
    }

    /// What a stored pod adds: bound and not finished.
    pub fn stored(pod: &PodFacts) -> Option<Self> {
        (!pod.node_name.is_empty() && pod.active()).then(|| Self::of(pod, &pod.node_name))
    }
}

/// One node's usage.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub requested: Resources,
    pub pods: usize,
    /// Host port → pods using it.
    pub host_ports: HashMap<i64, usize>,
    /// Controller uid → its pods here.
    pub per_controller: HashMap<String, usize>,
}

impl Usage {
    fn add(&mut self, c: &Contribution) {
        self.requested.cpu += c.requests.cpu;
        self.requested.memory += c.requests.memory;
        self.pods += 1;
        for p in &c.host_ports {
            *self.host_ports.entry(*p).or_default() += 1;
        }
        if let Some(uid) = &c.controller {
            *self.per_controller.entry(uid.clone()).or_default() += 1;
        }
    }

    fn sub(&mut self, c: &Contribution) {
        self.requested.cpu -= c.requests.cpu;
        self.requested.memory -= c.requests.memory;
        self.pods -= 1;
        for p in &c.host_ports {
            dec(&mut self.host_ports, p);
        }
        if let Some(uid) = &c.controller {
            dec(&mut self.per_controller, uid);
        }
    }

    fn is_empty(&self) -> bool {
        self.pods == 0
    }
}

fn dec<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// Usage per node, and what each pod is counted for.
#[derive(Debug, Default)]
pub struct Accounting {
    usage: HashMap<String, Usage>,
    /// Pod storage key → its contribution, and whether it is only assumed.
    counted: HashMap<String, (Contribution, bool)>,
}

impl Accounting {
    /// The pod under `key` now contributes `c` (`None`: nothing); `assumed` when the
    /// scheduler decided it and the caches do not show it yet.
    pub fn set(&mut self, key: &str, c: Option<Contribution>, assumed: bool) {
        if let Some((old, _)) = self.counted.remove(key) {
            let usage = self.usage.get_mut(&old.node).expect("counted on its node");
            usage.sub(&old);
            if usage.is_empty() {
                self.usage.remove(&old.node);
            }
        }
        if let Some(c) = c {
            self.usage.entry(c.node.clone()).or_default().add(&c);
            self.counted.insert(key.to_string(), (c, assumed));
        }
    }

    /// Forgets an assumption whose binding failed (a stored state replaced it already: kept).
    pub fn forget_assumed(&mut self, key: &str) {
        if self.counted.get(key).is_some_and(|(_, assumed)| *assumed) {
            self.set(key, None, false);
        }
    }

    /// The usage of node `name`.
    pub fn usage(&self, name: &str) -> Option<&Usage> {
        self.usage.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(node: &str, cpu: f64, port: Option<i64>, rc: Option<&str>) -> Contribution {
        Contribution {
            node: node.into(),
            requests: Resources { cpu, memory: 1.0 },
            host_ports: port.into_iter().collect(),
            controller: rc.map(Into::into),
        }
    }

    #[test]
    fn usage_follows_each_pod_exactly() {
        let mut a = Accounting::default();
        a.set("p1", Some(c("n1", 1.0, Some(80), Some("rc"))), false);
        a.set("p2", Some(c("n1", 0.5, None, Some("rc"))), false);
        let u = a.usage("n1").unwrap();
        assert_eq!((u.requested.cpu, u.pods), (1.5, 2));
        assert_eq!(u.per_controller["rc"], 2);
        assert_eq!(u.host_ports[&80], 1);
        // Moves (an update seen twice changes nothing).
        a.set("p1", Some(c("n2", 1.0, Some(80), Some("rc"))), false);
        a.set("p1", Some(c("n2", 1.0, Some(80), Some("rc"))), false);
        let u = a.usage("n1").unwrap();
        assert_eq!((u.requested.cpu, u.pods), (0.5, 1));
        assert!(u.host_ports.is_empty());
        assert_eq!(a.usage("n2").unwrap().host_ports[&80], 1);
        a.set("p2", None, false);
        assert!(a.usage("n1").is_none());
    }

    #[test]
    fn an_assumption_is_replaced_by_its_binding_or_forgotten() {
        let mut a = Accounting::default();
        a.set("p", Some(c("n", 1.0, None, None)), true);
        // Its binding arrives: counted once.
        a.set("p", Some(c("n", 1.0, None, None)), false);
        a.forget_assumed("p");
        assert_eq!(a.usage("n").unwrap().pods, 1, "a stored binding stays");
        a.set("q", Some(c("n", 1.0, None, None)), true);
        a.forget_assumed("q");
        assert_eq!(a.usage("n").unwrap().pods, 1);
    }
}
