//! Hollow agents for the controller workload: `keelson agent --runtime hollow` processes, each
//! on its own loopback address 127.SLOT.1.N (outside the masters' 127.SLOT.0.N, so partitions
//! between masters never cut an agent). Every agent logs to `ROOT/agent-NAME.log`. Dropping
//! [`Agents`] kills every process it started.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

struct Agent {
    name: String,
    address: Ipv4Addr,
    child: Option<Child>,
}

/// The hollow agents of a campaign.
pub struct Agents {
    bin: PathBuf,
    root: PathBuf,
    masters: Vec<String>,
    heartbeat_ms: u64,
    agents: Vec<Agent>,
}

impl Agents {
    /// Starts `n` agents `chaos-node-1..n` following `masters` (API URLs).
    pub fn start(
        bin: &Path,
        root: &Path,
        slot: u8,
        n: u32,
        masters: Vec<String>,
        heartbeat_ms: u64,
    ) -> Agents {
        let mut a = Agents {
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
            masters,
            heartbeat_ms,
            agents: (1..=n)
                .map(|i| Agent {
                    name: format!("chaos-node-{i}"),
                    address: Ipv4Addr::new(127, slot, 1, (i % 250) as u8 + 1),
                    child: None,
                })
                .collect(),
        };
        for i in 0..a.agents.len() {
            a.spawn(i);
        }
        a
    }

    /// The agents' node names.
    pub fn names(&self) -> Vec<String> {
        self.agents.iter().map(|a| a.name.clone()).collect()
    }

    fn spawn(&mut self, i: usize) {
        let a = &self.agents[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(format!("agent-{}.log", a.name)));
        let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((o, e)) => (Stdio::from(o), Stdio::from(e)),
            Err(_) => (Stdio::null(), Stdio::null()),
        };
        // Its /metrics and health listener goes to ADDRESS:10250 when free (else it runs
        // without one).
        let child = Command::new(&self.bin)
            .args(["agent", "--runtime", "hollow", "--name", &a.name])
            .args(["--address", &a.address.to_string()])
            .args(["--heartbeat-ms", &self.heartbeat_ms.to_string()])
            .args(["--masters", &self.masters.join(",")])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .ok();
        self.agents[i].child = child;
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.agents[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts every agent with a new list of masters (after a membership change: an agent
    /// only knows the masters it was started with).
    pub fn restart_all(&mut self, masters: Vec<String>) {
        self.masters = masters;
        for i in 0..self.agents.len() {
            self.kill(i);
            self.spawn(i);
        }
    }

    /// Starts again every agent whose process ended; returns their names.
    pub fn respawn_exited(&mut self) -> Vec<String> {
        let mut again = Vec::new();
        for i in 0..self.agents.len() {
            let exited = match self.agents[i].child.as_mut() {
                None => true,
                Some(c) => !matches!(c.try_wait(), Ok(None)),
            };
            if exited {
                self.kill(i);
                self.spawn(i);
                again.push(self.agents[i].name.clone());
            }
        }
        again
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for i in 0..self.agents.len() {
            self.kill(i);
        }
    }
}
