//! The connection to the Docker engine, shared by the pod runtime (`docker.rs`) and the image
//! builder (`images.rs`).

use std::time::Duration;

use bollard::Docker;

/// Connects to the engine (`DOCKER_HOST` or the local socket) and negotiates its API version.
pub async fn connect() -> anyhow::Result<Docker> {
    let where_ =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let hint =
        "start Docker, point DOCKER_HOST at it, or try keelson without Docker: --runtime hollow";
    let docker = Docker::connect_with_defaults()
        .map_err(|e| anyhow::anyhow!("no Docker engine at {where_} ({e}); {hint}"))?;
    let docker = tokio::time::timeout(Duration::from_secs(5), docker.negotiate_version())
        .await
        .map_err(|_| {
            anyhow::anyhow!("the Docker engine at {where_} did not answer in 5 s; {hint}")
        })?
        .map_err(|e| anyhow::anyhow!("no Docker engine at {where_} ({e}); {hint}"))?;
    Ok(docker)
}
