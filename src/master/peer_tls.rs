//! Mutual TLS on the Raft port: `--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file`
//! (etcd's names), and the expiry of every
//! certificate a master holds as a metric.
//!
//! The Raft port carries openraft's RPCs and the requests followers forward to the leader
//! (writes, read indexes, membership changes): whoever speaks it is a master. So the server asks
//! every caller for a certificate signed by the peer CA and refuses the handshake otherwise; the
//! router, and with it the cluster id, are reached only by authenticated callers. The client side
//! (reqwest) trusts that CA alone and presents the same certificate.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The PEM files of one master's side of peer mTLS.
#[derive(Debug, Clone)]
pub struct PeerFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub ca: &'a Path,
}

impl PeerFiles<'_> {
    /// The rustls server configuration of the Raft port: this master's certificate, and client
    /// certificates required and verified against the peer CA.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let chain = read_chain(self.cert, "--peer-cert-file")?;
        let key = PrivateKeyDer::from_pem_file(self.key)
            .map_err(|e| anyhow::anyhow!("--peer-key-file {}: {e}", self.key.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in read_chain(self.ca, "--peer-trusted-ca-file")? {
            roots
                .add(ca)
                .with_context(|| format!("--peer-trusted-ca-file {}", self.ca.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .context("--peer-trusted-ca-file")?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .context("--peer-cert-file and --peer-key-file do not make a usable pair")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The client side, for the raft crate: certificate, key and CA as PEM.
    pub fn client(&self) -> anyhow::Result<keelson_raft::network::PeerTls> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("read {}", p.display()));
        let mut identity_pem = read(self.cert)?;
        identity_pem.push(b'\n');
        identity_pem.extend(read(self.key)?);
        Ok(keelson_raft::network::PeerTls {
            identity_pem,
            ca_pem: read(self.ca)?,
        })
    }
}

fn read_chain(path: &Path, flag: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect())
        .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
    if chain.is_empty() {
        bail!("{flag} {} holds no certificate", path.display());
    }
    Ok(chain)
}

/// True when `--insecure-plaintext-peers` may be honoured: the Raft address and every peer's
/// are loopback, so no other machine can speak to the unauthenticated port.
pub fn plaintext_allowed<'a>(addrs: impl IntoIterator<Item = &'a str>) -> bool {
    addrs.into_iter().all(|a| {
        a.parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback())
    })
}

/// The master a verified peer certificate names: its DNS name `master-<id>` (as
/// [`issue_peer_cert`] writes it), checked with webpki's own name matching. `None` when it names
/// no master, or more than one.
pub fn certified_master(cert: &CertificateDer<'_>) -> Option<u64> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut ids = cert
        .valid_dns_names()
        .filter_map(|n| n.strip_prefix("master-")?.parse::<u64>().ok())
        .filter(|id| {
            let name = rustls::pki_types::ServerName::try_from(format!("master-{id}"));
            name.is_ok_and(|n| cert.verify_is_valid_for_subject_name(&n).is_ok())
        });
    let id = ids.next()?;
    ids.all(|other| other == id).then_some(id)
}

/// Registers `keelson_certificate_expiry_timestamp_seconds{cert}` for each (label, PEM file).
/// A file that does not parse is logged and left out.
pub fn register_expiry(
    registry: &prometheus::Registry,
    certs: &[(&str, &Path)],
) -> anyhow::Result<()> {
    let gauge = prometheus::GaugeVec::new(
        prometheus::Opts::new(
            "keelson_certificate_expiry_timestamp_seconds",
            "When a certificate this master uses expires (notAfter, Unix seconds).",
        ),
        &["cert"],
    )?;
    registry.register(Box::new(gauge.clone()))?;
    for (label, path) in certs {
        let first = read_chain(path, label).map(|c| c.into_iter().next());
        match first.ok().flatten().and_then(|c| not_after(&c)) {
            Some(t) => gauge.with_label_values(&[label]).set(t as f64),
            None => {
                tracing::warn!(cert = label, path = %path.display(), "cannot read the certificate's expiry")
            }
        }
    }
    Ok(())
}

/// One DER element: (tag, contents, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The notAfter of an X.509 certificate, in Unix seconds (RFC 5280 §4.1: Certificate →
/// TBSCertificate → [version], serial, signature, issuer, validity).
fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, cert, _) = der(cert)?;
    let (_, tbs, _) = der(cert)?;
    let (tag, _, mut rest) = der(tbs)?;
    if tag == 0xa0 {
        rest = der(rest)?.2; // the version was explicit: skip the serial too
    }
    let rest = der(rest)?.2; // signature algorithm
    let rest = der(rest)?.2; // issuer
    let (_, validity, _) = der(rest)?;
    let (_, _, after) = der(validity)?;
    let (tag, time, _) = der(after)?;
    let text = std::str::from_utf8(time).ok()?;
    let digits = |s: &str| s.parse::<i64>().ok();
    let (year, rest) = match tag {
        0x17 => {
            let yy = digits(text.get(0..2)?)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        0x18 => (digits(text.get(0..4)?)?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| digits(rest.get(i..i + 2)?);
    let (month, day) = (field(0)?, field(2)?);
    let (h, m, s) = (field(4)?, field(6)?, field(8)?);
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_read_from_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 3, 4);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()), Some(1_930_348_800));
        params.not_after = rcgen::date_time_ymd(2060, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(not_after(cert.der()), Some(2_840_140_800));
        assert_eq!(not_after(b"\x30\x05junk"), None);
    }

    #[test]
    fn plaintext_only_on_loopback() {
        assert!(plaintext_allowed(["127.0.0.1:1", "127.3.0.2:5", "[::1]:7"]));
        assert!(!plaintext_allowed(["127.0.0.1:1", "10.0.0.1:2"]));
        assert!(!plaintext_allowed(["nothost"]));
    }
}
