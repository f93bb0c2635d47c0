//! The object commands: `get`, `create`, `apply`, `delete`, `scale`, `logs`.

use std::io::Write;

use anyhow::{anyhow, bail};
use clap::Args;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::{enc, ServerError};
use super::manifest::{self, collection_path, object_path, resolve, Manifest};
use super::table::{self, Table};
use super::{report, Ctx, Reported};
use crate::registry::ResourceInfo;

/// Flags of `get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// Resource type (`pods`, `pod`, `po`, ...), or TYPE/NAME.
    pub resource: String,
    /// Names of objects (default: every object).
    pub names: Vec<String>,
    /// Output: json, yaml, wide or name (default: a table).
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Label selector, e.g. `app=web,tier!=db`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector, e.g. `status.phase=Running`.
    #[arg(long)]
    pub field_selector: Option<String>,
    /// After listing, watch for changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Omit the table header.
    #[arg(long)]
    pub no_headers: bool,
}

/// Flags of `create` and `apply`.
#[derive(Args, Debug)]
pub struct FileArgs {
    /// Files or directories of manifests; `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub filenames: Vec<String>,
}

/// Flags of `delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Resource type, or TYPE/NAME.
    pub resource: Option<String>,
    pub names: Vec<String>,
    /// Delete the objects of these files.
    #[arg(short = 'f', long = "filename")]
    pub filenames: Vec<String>,
    /// Delete every object matching this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// A missing object is not an error.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// Flags of `scale`.
#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// `rc` (or TYPE/NAME).
    pub resource: String,
    pub name: Option<String>,
    /// The new number of replicas.
    #[arg(long)]
    pub replicas: i64,
}

/// Flags of `logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    pub pod: String,
    /// Container (default: the pod's only one).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<i64>,
}

/// How `get` prints.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Output {
    Table { wide: bool },
    Json,
    Yaml,
    Name,
}

impl Output {
    fn parse(s: Option<&str>) -> anyhow::Result<Self> {
        Ok(match s {
            None => Output::Table { wide: false },
            Some("wide") => Output::Table { wide: true },
            Some("json") => Output::Json,
            Some("yaml") => Output::Yaml,
            Some("name") => Output::Name,
            Some(other) => bail!(
                "unable to match a printer suitable for the output format {other:?}, allowed formats are: json,name,wide,yaml"
            ),
        })
    }
}

/// The resource and names of `TYPE NAME...` or `TYPE/NAME...`.
fn targets(
    resource: &str,
    names: &[String],
) -> anyhow::Result<(&'static ResourceInfo, Vec<String>)> {
    match resource.split_once('/') {
        Some((kind, name)) => {
            let info = resolve(kind)?;
            let mut out = vec![name.to_string()];
            for n in names {
                match n.split_once('/') {
                    Some((k, name)) if resolve(k)?.plural == info.plural => out.push(name.into()),
                    _ => bail!("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'keelson ctl get resource/<resource_name>' instead of 'keelson ctl get resource resource/<resource_name>'), and every name must be of the same type"),
                }
            }
            if out.iter().any(String::is_empty) {
                bail!("resource name may not be empty");
            }
            Ok((info, out))
        }
        None => Ok((resolve(resource)?, names.to_vec())),
    }
}

/// `?labelSelector=...&fieldSelector=...` (empty if neither).
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", enc(v)))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// `get`.
pub async fn get(ctx: &Ctx, a: GetArgs) -> anyhow::Result<()> {
    let output = Output::parse(a.output.as_deref())?;
    let (info, names) = targets(&a.resource, &a.names)?;
    let ns = (!a.all_namespaces).then_some(ctx.namespace.as_str());
    let with_ns = a.all_namespaces && info.namespaced;
    let mut printer = Printer {
        info,
        output,
        with_ns,
        headers: !a.no_headers,
        table: Table::default(),
        header_printed: false,
    };
    if names.is_empty() {
        let q = query(&[
            ("labelSelector", a.selector.as_deref()),
            ("fieldSelector", a.field_selector.as_deref()),
        ]);
        let list = ctx
            .client
            .get(&format!("{}{q}", collection_path(info, ns)))
            .await?;
        let items = table::list(&list, "/items");
        if a.watch {
            printer.objects(items);
        } else if items.is_empty() && matches!(output, Output::Table { .. } | Output::Name) {
            match (info.namespaced, ns) {
                (true, Some(ns)) => eprintln!("No resources found in {ns} namespace."),
                _ => eprintln!("No resources found"),
            }
        } else {
            printer.whole(&list, items);
        }
        if a.watch {
            let rv = list["metadata"]["resourceVersion"].as_str().unwrap_or("0");
            let watch_q = format!(
                "{}watch=true&resourceVersion={}",
                if q.is_empty() { "?" } else { "&" },
                enc(rv)
            );
            let path = format!("{}{q}{watch_q}", collection_path(info, ns));
            ctx.client
                .watch(&path, |ev| {
                    printer.objects(std::slice::from_ref(&ev["object"]));
                    Ok(true)
                })
                .await?;
        }
        return Ok(());
    }
    if a.watch && names.len() != 1 {
        bail!("watch is only supported on individual resources and resource collections, but {} resources were found", names.len());
    }
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &names {
        match ctx.client.get(&object_path(info, ns, name)).await {
            Ok(o) => found.push(o),
            Err(e) => errors.push(e),
        }
    }
    if !found.is_empty() {
        if found.len() == 1 && !a.watch {
            printer.whole(&found[0], &found);
        } else if a.watch {
            printer.objects(&found);
        } else {
            let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": found});
            printer.whole(&list, &found);
        }
    }
    if !errors.is_empty() {
        errors.iter().for_each(report);
        return Err(Reported.into());
    }
    if a.watch {
        let rv = found[0]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0");
        let path = format!(
            "{}?fieldSelector={}&watch=true&resourceVersion={}",
            collection_path(info, ns),
            enc(&format!("metadata.name={}", names[0])),
            enc(rv)
        );
        ctx.client
            .watch(&path, |ev| {
                printer.objects(std::slice::from_ref(&ev["object"]));
                Ok(true)
            })
            .await?;
    }
    Ok(())
}

/// Prints `get`'s objects in the chosen output.
struct Printer {
    info: &'static ResourceInfo,
    output: Output,
    with_ns: bool,
    headers: bool,
    table: Table,
    header_printed: bool,
}

impl Printer {
    /// A whole answer: JSON and YAML print `whole` (the object or the list) as it is; tables
    /// and names print `items`.
    fn whole(&mut self, whole: &Value, items: &[Value]) {
        match self.output {
            Output::Json => println!("{}", pretty_json(whole)),
            Output::Yaml => print!("{}", yaml(whole)),
            _ => self.objects(items),
        }
    }

    /// Objects one by one (a watch's events): rows, names, or one document each.
    fn objects(&mut self, items: &[Value]) {
        let mut out = std::io::stdout().lock();
        match self.output {
            Output::Json => items
                .iter()
                .for_each(|o| drop(writeln!(out, "{}", pretty_json(o)))),
            Output::Yaml => items
                .iter()
                .for_each(|o| drop(write!(out, "---\n{}", yaml(o)))),
            Output::Name => items.iter().for_each(|o| {
                let name = o["metadata"]["name"].as_str().unwrap_or("");
                drop(writeln!(out, "{}/{name}", self.info.singular))
            }),
            Output::Table { wide } => {
                let now = jiff::Timestamp::now();
                let mut rows = Vec::new();
                if self.headers && !self.header_printed {
                    let mut h: Vec<String> = table::columns(self.info, wide)
                        .into_iter()
                        .map(String::from)
                        .collect();
                    if self.with_ns {
                        h.insert(0, "NAMESPACE".into());
                    }
                    rows.push(h);
                    self.header_printed = true;
                }
                for o in items {
                    let mut r = table::row(self.info, o, wide, now);
                    if self.with_ns {
                        r.insert(0, o["metadata"]["namespace"].as_str().unwrap_or("").into());
                    }
                    rows.push(r);
                }
                if !items.is_empty() {
                    let _ = out.write_all(self.table.render(&rows).as_bytes());
                }
            }
        }
        let _ = out.flush();
    }
}

fn pretty_json(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// YAML text of `v` (always ends with a newline).
pub fn yaml(v: &Value) -> String {
    serde_norway::to_string(v).unwrap_or_else(|e| format!("# not printable as YAML: {e}\n"))
}

/// Runs `op` on every manifest, printing its line or its error; fails after all of them if any
/// failed.
async fn each_manifest<'a, F, Fut>(ms: &'a [Manifest], op: F) -> anyhow::Result<()>
where
    F: Fn(&'a Manifest) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let mut failed = false;
    for m in ms {
        match op(m).await {
            Ok(line) => println!("{line}"),
            Err(e) => {
                report(&e);
                failed = true;
            }
        }
    }
    if failed {
        Err(Reported.into())
    } else {
        Ok(())
    }
}

/// `create -f`.
pub async fn create(ctx: &Ctx, a: FileArgs) -> anyhow::Result<()> {
    let ms = manifest::read_all(&a.filenames)?;
    each_manifest(&ms, |m| create_one(ctx, m)).await
}

async fn create_one(ctx: &Ctx, m: &Manifest) -> anyhow::Result<String> {
    let info = m.info()?;
    let ns = m.namespace(info, &ctx.namespace, ctx.explicit_namespace)?;
    let (path, body) = m.create_request(info, ns.as_deref())?;
    let created = ctx.client.send_json(Method::POST, &path, body).await?;
    // A v1beta1 answer names the object by `id`.
    let name = created["metadata"]["name"]
        .as_str()
        .or_else(|| created["id"].as_str())
        .unwrap_or("");
    Ok(format!("{}/{name} created", info.singular))
}

/// `apply -f`.
pub async fn apply(ctx: &Ctx, a: FileArgs) -> anyhow::Result<()> {
    let ms = manifest::read_all(&a.filenames)?;
    each_manifest(&ms, |m| apply_one(ctx, m)).await
}

/// Creates the object if it is absent; else merges it over the current one and replaces that
/// at its resource version, retrying when somebody else changed it in between.
async fn apply_one(ctx: &Ctx, m: &Manifest) -> anyhow::Result<String> {
    let info = m.info()?;
    let name = m
        .name()
        .ok_or_else(|| anyhow!("error validating {:?}: metadata.name not set", m.source))?;
    let ns = m.namespace(info, &ctx.namespace, ctx.explicit_namespace)?;
    let path = object_path(info, ns.as_deref(), name);
    let mut last = None;
    for _ in 0..5 {
        let current = match ctx.client.get(&path).await {
            Ok(c) => c,
            Err(e) if server_code(&e) == Some(404) => {
                let (coll, body) = m.create_request(info, ns.as_deref())?;
                match ctx.client.send_json(Method::POST, &coll, body).await {
                    Ok(_) => return Ok(format!("{}/{name} created", info.singular)),
                    // Created meanwhile: update it instead.
                    Err(e) if server_code(&e) == Some(409) => {
                        last = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        if manifest::already_applied(&current, &m.object) {
            return Ok(format!("{}/{name} unchanged", info.singular));
        }
        let desired = manifest::merged(&current, &m.object);
        match ctx.client.send_json(Method::PUT, &path, &desired).await {
            Ok(_) => return Ok(format!("{}/{name} configured", info.singular)),
            Err(e) if server_code(&e) == Some(409) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("apply: too many conflicts")))
}

/// The HTTP status of a server's error.
fn server_code(e: &anyhow::Error) -> Option<u16> {
    e.downcast_ref::<ServerError>().map(|s| s.code)
}

/// `delete`.
pub async fn delete(ctx: &Ctx, a: DeleteArgs) -> anyhow::Result<()> {
    let mut victims: Vec<(&'static ResourceInfo, Option<String>, String)> = Vec::new();
    let mut failed = false;
    if !a.filenames.is_empty() {
        if a.resource.is_some() {
            bail!("when -f is given, no resource type or name may be given");
        }
        for m in manifest::read_all(&a.filenames)? {
            let target = m.info().and_then(|info| {
                let name = m
                    .name()
                    .ok_or_else(|| anyhow!("resource name may not be empty"))?;
                let ns = m.namespace(info, &ctx.namespace, ctx.explicit_namespace)?;
                Ok((info, ns, name.to_string()))
            });
            match target {
                Ok(t) => victims.push(t),
                Err(e) => {
                    report(&e);
                    failed = true;
                }
            }
        }
    } else {
        let resource = a.resource.as_deref().ok_or_else(|| {
            anyhow!("you must provide one or more resources by argument or filename")
        })?;
        let (info, names) = targets(resource, &a.names)?;
        let ns = info.namespaced.then(|| ctx.namespace.clone());
        match (&a.selector, names.is_empty()) {
            (Some(sel), true) => {
                let path = format!(
                    "{}{}",
                    collection_path(info, ns.as_deref()),
                    query(&[("labelSelector", Some(sel))])
                );
                let list = ctx.client.get(&path).await?;
                for o in table::list(&list, "/items") {
                    let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
                    victims.push((info, ns.clone(), name));
                }
                if victims.is_empty() {
                    eprintln!("No resources found");
                }
            }
            (None, false) => {
                victims.extend(names.into_iter().map(|n| (info, ns.clone(), n)));
            }
            (Some(_), false) => bail!("name cannot be provided when a selector is specified"),
            (None, true) => bail!(
                "resource(s) were provided, but no name was specified; give a name or --selector"
            ),
        }
    }
    for (info, ns, name) in victims {
        let path = object_path(info, ns.as_deref(), &name);
        match ctx.client.json(Method::DELETE, &path, None).await {
            Ok(_) => println!("{} \"{name}\" deleted", info.singular),
            Err(e) if a.ignore_not_found && server_code(&e) == Some(404) => {}
            Err(e) => {
                report(&e);
                failed = true;
            }
        }
    }
    if failed {
        Err(Reported.into())
    } else {
        Ok(())
    }
}

/// `scale`: a merge patch of the scale subresource's `spec.replicas`.
pub async fn scale(ctx: &Ctx, a: ScaleArgs) -> anyhow::Result<()> {
    let names: Vec<String> = a.name.into_iter().collect();
    let (info, names) = targets(&a.resource, &names)?;
    if !info.has_scale {
        bail!("{} cannot be scaled", info.plural);
    }
    let [name] = names.as_slice() else {
        bail!("give exactly one {} to scale", info.singular);
    };
    if a.replicas < 0 || a.replicas > i64::from(i32::MAX) {
        bail!(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0"
        );
    }
    let path = format!("{}/scale", object_path(info, Some(&ctx.namespace), name));
    let body = json!({"spec": {"replicas": a.replicas}});
    ctx.client
        .json(
            Method::PATCH,
            &path,
            Some(("application/merge-patch+json", serde_json::to_vec(&body)?)),
        )
        .await?;
    println!("{}/{name} scaled", info.singular);
    Ok(())
}

/// `logs`: the pod's `log` subresource, streamed to stdout.
pub async fn logs(ctx: &Ctx, a: LogsArgs) -> anyhow::Result<()> {
    let pod = a
        .pod
        .strip_prefix("pod/")
        .or(a.pod.strip_prefix("pods/"))
        .or(a.pod.strip_prefix("po/"))
        .unwrap_or(&a.pod);
    let tail = a.tail.map(|t| t.to_string());
    let q = query(&[
        ("container", a.container.as_deref()),
        ("follow", a.follow.then_some("true")),
        ("tailLines", tail.as_deref()),
    ]);
    let pods = resolve("pods")?;
    let path = format!("{}/log{q}", object_path(pods, Some(&ctx.namespace), pod));
    let resp = ctx.client.ok(Method::GET, &path, None, a.follow).await?;
    let mut stream = resp.bytes_stream();
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk?)?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_forms() {
        let (info, names) = targets("rc/web", &[]).unwrap();
        assert_eq!(
            (info.plural, names),
            ("replicationcontrollers", vec!["web".to_string()])
        );
        let (info, names) = targets("po", &["a".into(), "b".into()]).unwrap();
        assert_eq!((info.plural, names.len()), ("pods", 2));
        assert!(targets("po/a", &["b".into()]).is_err());
        assert!(targets("po/", &[]).is_err());
        assert!(targets("widgets", &[]).is_err());
    }

    #[test]
    fn queries_and_outputs() {
        assert_eq!(query(&[("labelSelector", None)]), "");
        assert_eq!(
            query(&[("labelSelector", Some("a=b")), ("fieldSelector", Some(""))]),
            "?labelSelector=a%3Db"
        );
        assert!(Output::parse(Some("xml")).is_err());
        assert_eq!(
            Output::parse(Some("wide")).unwrap(),
            Output::Table { wide: true }
        );
    }
}
