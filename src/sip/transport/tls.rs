//! TLS for SIP: the server certificate from PEM files, reloaded when they change, and `tls:`
//! listeners (SIP over TLS, RFC 3261 §26.2, as desk phones and carriers use it).
//!
//! The certificate is read again when its files change (checked at most every
//! [`RELOAD_CHECK`], on a handshake): renewing a certificate (certbot, an ACME client, a
//! copied file) needs no restart. A change that does not load (a half-written file, a key that
//! does not match) is logged and the previous certificate stays in use. The same acceptor
//! serves `wss:` listeners.
//!
//! A TLS connection is then a TCP one: the same framing, limits and per-connection writer.
//!
//! With `sip.tls_client_ca`, `tls:` listeners also ask for a client certificate: one that
//! chains to that CA is verified in the handshake (a wrong one ends it); none at all is
//! still let in (phones have none). A verified certificate goes to the endpoint with the
//! connection, which takes the peer's RFC 5923 `alias` only for names it holds.

use super::{Inbound, StreamLimits};
use crate::sip::endpoint::TransportKind;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How often, at most, the certificate files are looked at for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// How long a TLS handshake may take: a stalled one must not hold a connection slot.
pub(super) const HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);

/// TLS handshakes that failed or timed out since start-up (`tls:` and `wss:`).
static HANDSHAKE_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// TLS handshakes that failed or timed out since start-up, for the metrics.
pub fn handshake_failures() -> u64 {
    HANDSHAKE_FAILURES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts and logs a handshake that did not complete.
pub(super) fn handshake_failed(peer: std::net::SocketAddr, why: &str) {
    HANDSHAKE_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(%peer, reason = %why, "TLS handshake failed");
}

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The files hold no usable certificate or key.
    #[error("{0}")]
    Invalid(String),
}

/// A TLS acceptor for `tls:` and `wss:` listeners from PEM files (certificate chain, private
/// key), reloading them when they change; with `client_ca`, client certificates are asked
/// for and, when sent, verified against it.
pub fn tls_acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<tokio_rustls::TlsAcceptor, TlsSetupError> {
    let resolver = ReloadingCert::load(cert, key, RELOAD_CHECK)?;
    // The provider is named rather than taken from the process default: other crates bring
    // a second one, and rustls refuses to guess between them.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Invalid(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            add_ca_file(&mut roots, ca)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            // Phones present no certificate; they authenticate by digest as before.
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsSetupError::Invalid(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_cert_resolver(Arc::new(resolver));
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Adds the CA certificates in the PEM file `ca` to `roots`.
pub(super) fn add_ca_file(
    roots: &mut rustls::RootCertStore,
    ca: &Path,
) -> Result<(), TlsSetupError> {
    let pem = std::fs::read(ca).map_err(|source| TlsSetupError::Read {
        path: ca.display().to_string(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsSetupError::Invalid(format!("{}: {e}", ca.display())))?;
    if certs.is_empty() {
        return Err(TlsSetupError::Invalid(format!(
            "{}: no certificate",
            ca.display()
        )));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| TlsSetupError::Invalid(format!("{}: {e}", ca.display())))?;
    }
    Ok(())
}

/// A TLS client's certificate that the handshake verified against `sip.tls_client_ca`.
#[derive(Debug)]
pub(super) struct ClientCertificate(CertificateDer<'static>);

impl ClientCertificate {
    /// The end-entity certificate of a handshake that verified one.
    fn of(conn: &rustls::ServerConnection) -> Option<ClientCertificate> {
        let first = conn.peer_certificates()?.first()?;
        Some(ClientCertificate(first.clone().into_owned()))
    }
}

impl crate::sip::endpoint::CertifiedPeer for ClientCertificate {
    /// Name matching as rustls-webpki does it for servers (subjectAltName DNS and IP
    /// entries; the subject's CN is not used).
    fn certifies(&self, host: &str) -> bool {
        let Ok(name) = ServerName::try_from(host) else {
            return false;
        };
        webpki::EndEntityCert::try_from(&self.0)
            .and_then(|c| c.verify_is_valid_for_subject_name(&name))
            .is_ok()
    }
}

/// The files' modification times: what tells a renewed certificate.
fn modified(paths: [&Path; 2]) -> Option<[SystemTime; 2]> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some([m(paths[0])?, m(paths[1])?])
}

/// The certificate and key in `cert` and `key`, ready to sign handshakes.
fn read_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsSetupError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsSetupError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsSetupError::Invalid(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(TlsSetupError::Invalid(format!(
            "{}: no certificate",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsSetupError::Invalid(format!("{}: {e}", key.display())))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(certs, key_der, &provider).map_err(|e| {
        TlsSetupError::Invalid(format!("{} and {}: {e}", cert.display(), key.display()))
    })?;
    Ok(certified)
}

/// A certificate (the server's, or the one this node presents to trunks), read again from
/// its files when they change.
#[derive(Debug)]
pub(super) struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    every: Duration,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    current: Arc<CertifiedKey>,
    /// The files' times when last looked at (a failed load is not retried until they change
    /// again).
    seen: Option<[SystemTime; 2]>,
    checked: Instant,
}

impl ReloadingCert {
    pub(super) fn load(
        cert: &Path,
        key: &Path,
        every: Duration,
    ) -> Result<ReloadingCert, TlsSetupError> {
        let seen = modified([cert, key]);
        let current = Arc::new(read_certified_key(cert, key)?);
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            every,
            state: Mutex::new(Loaded {
                current,
                seen,
                checked: Instant::now(),
            }),
        })
    }

    /// The certificate to present now, reloaded first if the files changed.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.checked.elapsed() >= self.every {
            s.checked = Instant::now();
            let now = modified([&self.cert, &self.key]);
            if now.is_some() && now != s.seen {
                s.seen = now;
                match read_certified_key(&self.cert, &self.key) {
                    Ok(k) => {
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                        s.current = Arc::new(k);
                    }
                    Err(e) => tracing::warn!(
                        error = %e,
                        "TLS certificate files changed but do not load: keeping the previous one"
                    ),
                }
            }
        }
        s.current.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts SIP-over-TLS connections on `listener` until the endpoint goes away: a handshake,
/// then a connection like a TCP one.
pub fn spawn_tls_listener(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    to_endpoint: mpsc::Sender<Inbound>,
    limits: StreamLimits,
) -> tokio::task::JoinHandle<()> {
    super::accept_loop(listener, "tls", limits, move |stream, addr| {
        let tx = to_endpoint.clone();
        let acceptor = acceptor.clone();
        async move {
            match tokio::time::timeout(HANDSHAKE_WITHIN, acceptor.accept(stream)).await {
                Ok(Ok(s)) => {
                    let certified = ClientCertificate::of(s.get_ref().1).map(|c| {
                        tracing::debug!(peer = %addr, "TLS client presented a verified certificate");
                        Arc::new(c) as Arc<dyn crate::sip::endpoint::CertifiedPeer>
                    });
                    super::tcp::connection(s, addr, TransportKind::Tls, certified, tx, limits).await
                }
                Ok(Err(e)) => handshake_failed(addr, &e.to_string()),
                Err(_) => handshake_failed(addr, "timed out"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and key for `name`, made by openssl (skipped without it).
    fn make_cert(dir: &Path, name: &str) -> Option<(PathBuf, PathBuf)> {
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let ok = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        ok.then_some((cert, key))
    }

    /// Runs openssl in `dir`; false when it is missing or fails.
    fn openssl(dir: &Path, args: &[&str]) -> bool {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// A CA `{ca}.pem`/`{ca}.key` in `dir`, and a certificate for DNS name `name` it signed
    /// (`{name}.pem`, `{name}.key`). False when openssl is missing.
    fn ca_and_cert(dir: &Path, ca: &str, name: &str) -> bool {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )
        .is_ok()
            && (dir.join(format!("{ca}.pem")).exists()
                || openssl(
                    dir,
                    &[
                        &["req", "-x509"][..],
                        &ec,
                        &["-days", "1", "-subj", &format!("/CN={ca}")],
                    ]
                    .concat()
                    .into_iter()
                    .chain([
                        "-keyout",
                        &format!("{ca}.key"),
                        "-out",
                        &format!("{ca}.pem"),
                        "-addext",
                        "basicConstraints=critical,CA:TRUE",
                        "-addext",
                        "keyUsage=critical,keyCertSign",
                    ])
                    .collect::<Vec<_>>(),
                ))
            && openssl(
                dir,
                &[&["req"][..], &ec, &["-subj", &format!("/CN={name}")]]
                    .concat()
                    .into_iter()
                    .chain([
                        "-keyout",
                        &format!("{name}.key"),
                        "-out",
                        &format!("{name}.csr"),
                    ])
                    .collect::<Vec<_>>(),
            )
            && openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-out",
                    &format!("{name}.pem"),
                    "-extfile",
                    &ext,
                ],
            )
    }

    /// A client connecting to `addr` trusting `ca`, presenting `identity` if given.
    async fn connect_as(
        addr: std::net::SocketAddr,
        ca: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        add_ca_file(&mut roots, ca).expect("ca");
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => builder.with_client_cert_resolver(Arc::new(
                ReloadingCert::load(cert, key, RELOAD_CHECK).expect("client cert"),
            )),
            None => builder.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = ServerName::try_from("switchyard.test").expect("name");
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        // TLS 1.3: the server judges the client's certificate after the client's side of
        // the handshake is done; a read shows whether it was let in.
        use tokio::io::AsyncWriteExt;
        s.write_all(b"\r\n\r\n").await?;
        Ok(s)
    }

    /// `sip.tls_client_ca`: a client certificate from that CA is verified and handed to the
    /// endpoint with the connection (it holds its own name, not another); a client with no
    /// certificate (a phone) is let in without one; one from another CA is refused in the
    /// handshake.
    #[tokio::test]
    async fn client_certificates_are_verified_against_the_client_ca_and_handed_on() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        if !(ca_and_cert(d, "ca", "switchyard.test")
            && ca_and_cert(d, "ca", "edge.carrier.test")
            && ca_and_cert(d, "rogue-ca", "rogue.carrier.test"))
        {
            eprintln!("openssl missing: client certificates not tested here");
            return;
        }
        let acceptor = tls_acceptor(
            &d.join("switchyard.test.pem"),
            &d.join("switchyard.test.key"),
            Some(&d.join("ca.pem")),
        )
        .expect("acceptor");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, mut rx) = mpsc::channel(16);
        let limits = super::super::StreamLimits {
            max_connections: 8,
            max_per_ip: 8,
            idle: Duration::from_secs(5),
        };
        let task = spawn_tls_listener(listener, acceptor, tx, limits);
        let opened = |rx: &mut mpsc::Receiver<Inbound>| {
            let got = rx.try_recv();
            match got {
                Ok(Inbound::Opened { certified, .. }) => Some(certified),
                _ => None,
            }
        };
        let settle = || tokio::time::sleep(Duration::from_millis(300));
        let ca = d.join("ca.pem");

        let carrier = connect_as(
            addr,
            &ca,
            Some((
                &d.join("edge.carrier.test.pem"),
                &d.join("edge.carrier.test.key"),
            )),
        )
        .await
        .expect("a certificate from the CA is taken");
        settle().await;
        let who = opened(&mut rx)
            .expect("opened")
            .expect("its certificate handed on");
        assert!(who.certifies("edge.carrier.test"));
        assert!(who.certifies("EDGE.carrier.test"));
        assert!(!who.certifies("other.carrier.test"), "only its own name");
        assert!(!who.certifies("switchyard.test"));

        let phone = connect_as(addr, &ca, None)
            .await
            .expect("no certificate: let in");
        settle().await;
        assert!(opened(&mut rx).expect("opened").is_none(), "nothing proven");

        let before = handshake_failures();
        let _rogue = connect_as(
            addr,
            &d.join("ca.pem"),
            Some((
                &d.join("rogue.carrier.test.pem"),
                &d.join("rogue.carrier.test.key"),
            )),
        )
        .await;
        settle().await;
        assert!(
            opened(&mut rx).is_none(),
            "another CA's certificate: no connection"
        );
        assert!(handshake_failures() > before, "the refusal is counted");
        drop((carrier, phone));
        task.abort();
    }

    fn fingerprint(k: &CertifiedKey) -> Vec<u8> {
        k.cert[0].as_ref().to_vec()
    }

    #[test]
    fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let (Some((cert_a, key_a)), Some((cert_b, key_b))) =
            (make_cert(dir.path(), "a"), make_cert(dir.path(), "b"))
        else {
            eprintln!("openssl missing: certificate reload not tested here");
            return;
        };
        let (cert, key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
        std::fs::copy(&cert_a, &cert).expect("copy");
        std::fs::copy(&key_a, &key).expect("copy");
        let r = ReloadingCert::load(&cert, &key, Duration::ZERO).expect("load");
        let a = fingerprint(&r.current());

        // Renewed: the next handshake presents the new one.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::copy(&cert_b, &cert).expect("copy");
        std::fs::copy(&key_b, &key).expect("copy");
        let b = fingerprint(&r.current());
        assert_ne!(a, b, "the renewed certificate is served");

        // A half-written renewal (certificate without its key): the working one stays.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::copy(&cert_a, &cert).expect("copy");
        assert_eq!(
            fingerprint(&r.current()),
            b,
            "a mismatched pair is not taken"
        );
        // Its key arrives: now it loads.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::copy(&key_a, &key).expect("copy");
        assert_eq!(fingerprint(&r.current()), a);
    }

    #[test]
    fn files_that_hold_no_certificate_are_refused_at_start() {
        let dir = tempfile::tempdir().expect("tmp");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, "not a certificate").expect("write");
        std::fs::write(&key, "not a key").expect("write");
        let Err(err) = tls_acceptor(&cert, &key, None) else {
            panic!("junk taken for a certificate")
        };
        assert!(err.to_string().contains("c.pem"), "{err}");
        let Err(missing) = tls_acceptor(&dir.path().join("none.pem"), &key, None) else {
            panic!("a missing file taken for a certificate")
        };
        assert!(matches!(missing, TlsSetupError::Read { .. }), "{missing}");
    }
}
