//! `DATA_DIR/cluster.json`: what `keelson up` started (masters, agents, the cluster id and the
//! CA), read back by `keelson up` when it resumes, by `keelson ctl` to find the masters, and by
//! tools and tests.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One master in `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MasterEntry {
    pub id: u64,
    pub pid: u32,
    /// `https://HOST:PORT`
    pub api: String,
    /// `HOST:PORT`
    pub raft: String,
    pub data_dir: PathBuf,
}

/// One agent in `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentEntry {
    pub name: String,
    pub pid: u32,
    pub address: String,
    pub api: String,
}

/// The shape of `DATA_DIR/cluster.json`, which tools and tests rely on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterFile {
    pub cluster_id: String,
    pub masters: Vec<MasterEntry>,
    #[serde(default)]
    pub agents: Vec<AgentEntry>,
    /// The CA that signed the masters' serving certificate (PEM), for clients of the API.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The `keelson up` process that started them (what `keelson down` stops first).
    #[serde(default)]
    pub up_pid: Option<u32>,
    /// The Docker networks of a Docker cluster (`agent::networks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<ClusterNetworks>,
}

/// A cluster's Docker networks, names and subnets: pods join the first; the second's subnet is
/// the service cluster IP range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNetworks {
    pub pods: String,
    pub pods_subnet: String,
    pub services: String,
    /// The service cluster IP range (the masters' `--service-cluster-ip-range`).
    pub services_subnet: String,
}

impl ClusterFile {
    /// Reads `DATA_DIR/cluster.json`.
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = data_dir.join("cluster.json");
        match std::fs::read(&path) {
            Ok(b) => {
                Ok(Some(serde_json::from_slice(&b).with_context(|| {
                    format!("{} is not valid", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    /// Writes `DATA_DIR/cluster.json` durably (0600, through a synced part renamed over it).
    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let mut file = crate::files::PartFile::create(&data_dir.join("cluster.json"))?;
        file.write_all(&serde_json::to_vec_pretty(self)?)?;
        Ok(file.finish()?)
    }
}
