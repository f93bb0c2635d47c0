//! Images built locally, without a registry: `keelson/pause` (the infrastructure container that
//! holds a pod's network namespace) and the seed's `user/mysite` (a web page naming the pod that
//! serves it). Both are a root filesystem holding a static busybox (Debian's `busybox-static`)
//! with a symlink per applet, imported through the Engine's `POST /images/create?fromSrc=-` — what
//! `docker import` does.

use std::path::Path;

use anyhow::{bail, Context as _};
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;

/// The infrastructure image every pod starts first.
pub const PAUSE_IMAGE: &str = "keelson/pause:latest";
/// The seed's image.
pub const MYSITE_IMAGE: &str = "user/mysite:latest";
/// Where Debian's `busybox-static` installs its binary.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// The pause container: sleeps until SIGTERM, then exits at once.
const PAUSE_CMD: &str =
    r#"CMD ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]"#;

/// The seed's site: a page naming the pod (its hostname), served by busybox httpd on port 80.
const MYSITE_START: &str = r#"#!/bin/sh
mkdir -p /www
echo "mysite: served by pod $(hostname)" > /www/index.html
trap 'exit 0' TERM INT
httpd -f -p "${PORT:-80}" -h /www &
wait $!
"#;

/// One image to build.
struct Recipe {
    reference: &'static str,
    extra: &'static [(&'static str, &'static str)],
    changes: &'static [&'static str],
}

const RECIPES: [Recipe; 2] = [
    Recipe {
        reference: PAUSE_IMAGE,
        extra: &[],
        changes: &[PAUSE_CMD],
    },
    Recipe {
        reference: MYSITE_IMAGE,
        extra: &[("start.sh", MYSITE_START)],
        changes: &[r#"CMD ["/bin/sh", "/start.sh"]"#, "EXPOSE 80/tcp"],
    },
];

/// A root filesystem: busybox, its applets as symlinks, `/tmp`, `/etc/passwd` and `extra` files.
fn rootfs(busybox: &Path, extra: &[(&str, &str)]) -> anyhow::Result<Vec<u8>> {
    let binary = std::fs::read(busybox).with_context(|| {
        format!(
            "read {} (install Debian's busybox-static, or pass --busybox PATH to a static busybox)",
            busybox.display()
        )
    })?;
    let listed = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("run {} --list", busybox.display()))?;
    if !listed.status.success() {
        bail!("{} --list failed", busybox.display());
    }
    let applets = String::from_utf8_lossy(&listed.stdout).to_string();
    let mut tar = tar::Builder::new(Vec::new());
    let dir = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        tar.append_data(&mut h, path, std::io::empty())
    };
    let file = |tar: &mut tar::Builder<Vec<u8>>,
                path: &str,
                mode: u32,
                data: &[u8]|
     -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data)
    };
    for (d, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("www", 0o755),
    ] {
        dir(&mut tar, d, mode)?;
    }
    file(&mut tar, "bin/busybox", 0o755, &binary)?;
    for applet in applets.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    file(
        &mut tar,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    file(
        &mut tar,
        "etc/group",
        0o644,
        b"root:x:0:\nnogroup:x:65534:\n",
    )?;
    for (path, content) in extra {
        file(&mut tar, path, 0o755, content.as_bytes())?;
    }
    Ok(tar.into_inner()?)
}

/// Whether the engine holds `reference`.
pub async fn present(docker: &Docker, reference: &str) -> bool {
    docker.inspect_image(reference).await.is_ok()
}

/// Imports one image from a root-filesystem tarball.
async fn import(docker: &Docker, recipe: &Recipe, busybox: &Path) -> anyhow::Result<()> {
    let tarball = rootfs(busybox, recipe.extra)?;
    let (repo, tag) = recipe
        .reference
        .rsplit_once(':')
        .unwrap_or((recipe.reference, "latest"));
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(recipe.changes.iter().map(|c| c.to_string()).collect())
        .build();
    let mut progress = docker.create_image(
        Some(options),
        Some(bollard::body_full(tarball.into())),
        None,
    );
    while let Some(step) = progress.next().await {
        step.with_context(|| format!("import {}", recipe.reference))?;
    }
    if !present(docker, recipe.reference).await {
        bail!(
            "import {}: the engine does not list it afterwards",
            recipe.reference
        );
    }
    Ok(())
}

/// Builds the pause image (and, with `seed`, `user/mysite`) unless present; `force` rebuilds.
/// Returns the references built.
pub async fn ensure(
    docker: &Docker,
    busybox: &Path,
    seed: bool,
    force: bool,
) -> anyhow::Result<Vec<&'static str>> {
    let mut built = Vec::new();
    for recipe in RECIPES
        .iter()
        .filter(|r| seed || r.reference == PAUSE_IMAGE)
    {
        if force || !present(docker, recipe.reference).await {
            import(docker, recipe, busybox).await?;
            built.push(recipe.reference);
        }
    }
    Ok(built)
}

/// Flags of `keelson images`.
#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    /// The static busybox to build from (Debian's busybox-static).
    #[arg(long, default_value = DEFAULT_BUSYBOX)]
    pub busybox: std::path::PathBuf,
    /// Rebuild the images even when Docker has them.
    #[arg(long)]
    pub force: bool,
}

/// `keelson images`: builds `keelson/pause` and the seed's `user/mysite` into the local engine.
pub async fn run(args: ImagesArgs) -> anyhow::Result<()> {
    let docker = super::engine::connect().await?;
    let built = ensure(&docker, &args.busybox, true, args.force).await?;
    for reference in [PAUSE_IMAGE, MYSITE_IMAGE] {
        let how = if built.contains(&reference) {
            format!("built from {}", args.busybox.display())
        } else {
            "already present".to_string()
        };
        println!("{reference}: {how}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_holds_busybox_applets_and_extras() {
        let busybox = Path::new(DEFAULT_BUSYBOX);
        if !busybox.exists() {
            eprintln!("skipped: no {DEFAULT_BUSYBOX}");
            return;
        }
        let tarball = rootfs(busybox, &[("start.sh", MYSITE_START)]).unwrap();
        let mut archive = tar::Archive::new(&tarball[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        for expected in [
            "bin/busybox",
            "bin/sh",
            "bin/httpd",
            "bin/sleep",
            "start.sh",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing");
        }
    }
}
