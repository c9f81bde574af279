//! Optional HTTPS for the page, on a second port next to plain HTTP.
//!
//! Turned on from the settings page (`https_listen`). The certificate lives in
//! `DATA_DIR/web/tls/` (`cert.pem`, `key.pem` mode 0600): a self-signed one is generated the first
//! time HTTPS is turned on, for the device's names and addresses, and the admin can replace it
//! with one of their own. The listener is started and stopped live when the setting changes; a
//! new certificate applies to new connections at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use vantage_core::{LockExt, RwLockExt};

use anyhow::Context;
use axum::Router;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::config_file::{create_private_dir, write_atomic};
use super::device;
use super::server::{Limits, TlsSource, serve};

/// Certificate and key uploads beyond this are not PEM files of one certificate chain.
pub const MAX_PEM: usize = 32 * 1024;

#[derive(Debug, Clone, Serialize)]
pub struct TlsInfo {
    /// The address HTTPS is served on, when it is.
    pub listening: Option<SocketAddr>,
    pub self_signed: bool,
    /// SHA-256 of the leaf certificate, `AA:BB:...`, to compare with what the browser shows.
    pub fingerprint_sha256: Option<String>,
    pub error: Option<String>,
}

struct Running {
    /// As the settings say (port 0 binds any free port).
    requested: SocketAddr,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

pub struct Tls {
    dir: PathBuf,
    config: RwLock<Option<Arc<ServerConfig>>>,
    fingerprint: RwLock<Option<String>>,
    running: Mutex<Option<Running>>,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("dir", &self.dir).finish()
    }
}

/// Builds a server config from PEM text, checking that the key matches the certificate.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<(ServerConfig, String), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate is not valid PEM: {e}"))?;
    let Some(leaf) = certs.first() else {
        return Err("no certificate found (expected -----BEGIN CERTIFICATE-----)".into());
    };
    let fingerprint = ring::digest::digest(&ring::digest::SHA256, leaf)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the private key is not valid PEM: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the key does not fit the certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, fingerprint))
}

/// A self-signed certificate for the device's host name, `NAME.local`, `localhost` and its
/// addresses.
fn self_signed() -> anyhow::Result<(String, String)> {
    let host = device::hostname();
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if !host.is_empty() {
        names.push(host.clone());
        names.push(format!("{host}.local"));
    }
    names.extend(
        device::addresses()
            .into_iter()
            .map(|a| a.address.to_string()),
    );
    names.dedup();
    let mut params = rcgen::CertificateParams::new(names).context("certificate names")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("Vantage {host}"));
    let key = rcgen::KeyPair::generate().context("generate a key")?;
    let cert = params.self_signed(&key).context("sign the certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Tls {
    pub fn new(web_dir: &Path) -> Self {
        Self {
            dir: web_dir.join("tls"),
            config: RwLock::new(None),
            fingerprint: RwLock::new(None),
            running: Mutex::new(None),
            last_error: Mutex::new(None),
        }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
    fn marker(&self) -> PathBuf {
        self.dir.join("self-signed")
    }

    /// Loads the certificate, generating a self-signed one if there is none.
    fn ensure_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        if let Some(c) = self.config.read_or_recover().clone() {
            return Ok(c);
        }
        if !self.cert_path().exists() || !self.key_path().exists() {
            create_private_dir(&self.dir)?;
            let (cert, key) = self_signed()?;
            write_atomic(&self.key_path(), key.as_bytes(), 0o600, false, |_| Ok(()))?;
            write_atomic(&self.cert_path(), cert.as_bytes(), 0o644, false, |_| Ok(()))?;
            std::fs::write(self.marker(), b"generated on first use\n")?;
            tracing::info!(dir = %self.dir.display(), "generated a self-signed certificate");
        }
        let cert = std::fs::read(self.cert_path())?;
        let key = std::fs::read(self.key_path())?;
        let (config, fp) = server_config(&cert, &key).map_err(|e| {
            anyhow::anyhow!(
                "{} / {}: {e}",
                self.cert_path().display(),
                self.key_path().display()
            )
        })?;
        let config = Arc::new(config);
        *self.config.write_or_recover() = Some(config.clone());
        *self.fingerprint.write_or_recover() = Some(fp);
        Ok(config)
    }

    /// Replaces the certificate with the admin's own (validated first).
    pub fn install(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), String> {
        let (config, fp) = server_config(cert_pem, key_pem)?;
        (|| -> std::io::Result<()> {
            create_private_dir(&self.dir)?;
            write_atomic(&self.key_path(), key_pem, 0o600, true, |_| Ok(()))?;
            write_atomic(&self.cert_path(), cert_pem, 0o644, true, |_| Ok(()))?;
            match std::fs::remove_file(self.marker()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })()
        .map_err(|e| format!("cannot store the certificate: {e}"))?;
        *self.config.write_or_recover() = Some(Arc::new(config));
        *self.fingerprint.write_or_recover() = Some(fp);
        Ok(())
    }

    pub fn info(&self) -> TlsInfo {
        let running = self.running.lock_or_recover();
        TlsInfo {
            listening: running.as_ref().map(|r| r.addr),
            self_signed: self.marker().exists() || !self.cert_path().exists(),
            fingerprint_sha256: self.fingerprint.read_or_recover().clone(),
            error: self.last_error.lock_or_recover().clone(),
        }
    }

    /// Serves `app` over HTTPS on `listen`, or stops serving (`None`). Must run inside the
    /// Tokio runtime.
    pub async fn apply(
        self: &Arc<Self>,
        listen: Option<SocketAddr>,
        app: Router,
    ) -> Result<(), String> {
        let result = self.apply_inner(listen, app).await;
        *self.last_error.lock_or_recover() = result.as_ref().err().cloned();
        if let Err(e) = &result {
            tracing::error!("HTTPS: {e}");
        }
        result
    }

    async fn apply_inner(
        self: &Arc<Self>,
        listen: Option<SocketAddr>,
        app: Router,
    ) -> Result<(), String> {
        let Some(listen) = listen else {
            self.stop();
            return Ok(());
        };
        let running = self
            .running
            .lock_or_recover()
            .as_ref()
            .map(|r| (r.requested, r.addr.port()));
        if running.is_some_and(|(requested, _)| requested == listen) {
            return Ok(());
        }
        self.ensure_config().map_err(|e| format!("{e:#}"))?;
        let cannot = |e: std::io::Error| format!("cannot listen on {listen}: {e}");
        // The new address is bound before the running listener stops, so a busy port keeps
        // HTTPS where it was. Only a move on the same port (`[::]` to `0.0.0.0`) needs ours
        // freed first, and gets it back if the move fails.
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => match running {
                Some((old, port))
                    if e.kind() == std::io::ErrorKind::AddrInUse && port == listen.port() =>
                {
                    self.stop();
                    match TcpListener::bind(listen).await {
                        Ok(l) => l,
                        Err(e) => {
                            if let Ok(l) = TcpListener::bind(old).await {
                                self.start(l, old, app)?;
                            }
                            return Err(cannot(e));
                        }
                    }
                }
                _ => return Err(cannot(e)),
            },
        };
        self.stop();
        self.start(listener, listen, app)
    }

    fn stop(&self) {
        if let Some(r) = self.running.lock_or_recover().take() {
            r.task.abort();
            tracing::info!(addr = %r.addr, "HTTPS stopped");
        }
    }

    fn start(
        self: &Arc<Self>,
        listener: TcpListener,
        requested: SocketAddr,
        app: Router,
    ) -> Result<(), String> {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let me = self.clone();
        let source: TlsSource = Arc::new(move || me.config.read_or_recover().clone());
        let task = tokio::spawn(serve(
            listener,
            app,
            Some(source),
            Limits::HTTPS,
            std::future::pending(),
        ));
        tracing::info!(%addr, "serving HTTPS");
        *self.running.lock_or_recover() = Some(Running {
            requested,
            addr,
            task,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_loads_and_mismatched_keys_are_refused() {
        let (cert, key) = self_signed().unwrap();
        let (_, fp) = server_config(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(fp.len(), 32 * 3 - 1);
        let (_, other_key) = self_signed().unwrap();
        let err = server_config(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        assert!(server_config(b"garbage", key.as_bytes()).is_err());
        assert!(server_config(cert.as_bytes(), b"").is_err());
    }
}
