//! kubectl-style tables: each kind's columns as the server's Table has them, aligned with three
//! spaces.

use serde_json::Value;

use crate::registry::{self, ResourceInfo};

/// Column headers of `info`'s table, as kubectl prints the server's Table: each kind's
/// columns (`registry/printing.rs`), upper-cased, priority 1 only when `wide`.
pub fn columns(info: &ResourceInfo, wide: bool) -> Vec<String> {
    registry::resource(info)
        .columns()
        .iter()
        .filter(|c| wide || c.priority == 0)
        .map(|c| c.name.to_uppercase())
        .collect()
}

/// The cells of `obj` under [`columns`]; `now` is the current time, for ages.
pub fn row(info: &ResourceInfo, obj: &Value, wide: bool, now: jiff::Timestamp) -> Vec<String> {
    let kind = registry::resource(info);
    kind.columns()
        .iter()
        .zip(kind.cells(obj, now))
        .filter(|(c, _)| wide || c.priority == 0)
        .map(|(_, cell)| match cell {
            Value::String(s) => s,
            other => other.to_string(),
        })
        .collect()
}

/// The array at `pointer`, or an empty one.
pub use crate::registry::printing::arr as list;

/// `a=1,b=2` for a string map (empty if absent).
pub fn map_string(m: Option<&Value>) -> String {
    m.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(&v.to_string())))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Prints rows aligned in columns, three spaces apart; widths only grow, so that a watch's
/// later rows line up with the first ones.
#[derive(Default)]
pub struct Table {
    widths: Vec<usize>,
}

impl Table {
    /// Renders `rows` (the first is the header if there is one).
    pub fn render(&mut self, rows: &[Vec<String>]) -> String {
        for r in rows {
            if self.widths.len() < r.len() {
                self.widths.resize(r.len(), 0);
            }
            for (w, c) in self.widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in rows {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                line.push_str(c);
                if i + 1 < r.len() {
                    let pad = self.widths[i] - c.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::manifest::resolve;
    use serde_json::json;

    #[test]
    fn pod_and_service_rows() {
        let now: jiff::Timestamp = "2024-01-01T00:10:00Z".parse().unwrap();
        let pod = json!({"metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1},
                {"name": "b", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let pods = resolve("po").unwrap();
        assert_eq!(
            row(pods, &pod, false, now),
            ["web", "1/2", "CrashLoopBackOff", "3", "10m"]
        );
        let svc = json!({"metadata": {"name": "db"}, "spec": {"type": "NodePort", "clusterIP": "10.0.0.5",
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443}]}});
        let svcs = resolve("svc").unwrap();
        assert_eq!(
            row(svcs, &svc, false, now),
            [
                "db",
                "NodePort",
                "10.0.0.5",
                "<none>",
                "80/TCP,443:30443/TCP",
                "<unknown>"
            ]
        );
        assert_eq!(
            columns(svcs, false).len(),
            row(svcs, &svc, false, now).len()
        );
        assert_eq!(columns(pods, true).len(), row(pods, &pod, true, now).len());
    }

    #[test]
    fn alignment() {
        let mut t = Table::default();
        let s = t.render(&[
            vec!["NAME".into(), "AGE".into()],
            vec!["a-long-name".into(), "5s".into()],
        ]);
        assert_eq!(s, "NAME          AGE\na-long-name   5s\n");
        assert_eq!(
            t.render(&[vec!["b".into(), "1m".into()]]),
            "b             1m\n"
        );
    }
}
