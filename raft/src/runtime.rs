//! Runtimes of their own, apart from the API's: Raft's, and the master's control loops'.
//!
//! openraft's core, its replication streams, the state machine worker, the proposer and the
//! Raft port's server (when the master spawns it here) run on these threads, so a burst of API
//! requests, watch fan-out or a controller pass never queues a heartbeat or a vote behind it.
//! Only the operating system's scheduler is shared.

use tokio::runtime::{Builder, Handle, Runtime};

/// Worker threads of the Raft runtime.
pub const RAFT_THREADS: usize = 2;

/// Owns a runtime; dropping it stops its tasks without blocking (it may be dropped inside
/// another runtime, where a blocking shutdown would panic).
pub struct OwnedRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl OwnedRuntime {
    /// A runtime of `threads` workers named `name`.
    pub fn new(name: &str, threads: usize) -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(OwnedRuntime {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Where to spawn its tasks.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
