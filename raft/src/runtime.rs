//! Raft's own tokio runtime, apart from the API's.
//!
//! openraft's core, its replication streams, the state machine worker, the proposer and the
//! Raft port's server (when the master spawns it here) run on these threads, so a burst of API
//! requests, watch fan-out or a controller pass never queues a heartbeat or a vote behind it.
//! Only the operating system's scheduler is shared.

use tokio::runtime::{Builder, Handle, Runtime};

/// Worker threads of the Raft runtime.
pub const RAFT_THREADS: usize = 2;

/// Owns the runtime; dropping it stops its tasks without blocking (it may be dropped inside
/// another runtime, where a blocking shutdown would panic).
pub struct RaftRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl RaftRuntime {
    pub fn new() -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(RAFT_THREADS)
            .thread_name("raft")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(RaftRuntime {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Where to spawn Raft's tasks.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
