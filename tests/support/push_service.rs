//! A test push service that behaves like the real ones (FCM, Mozilla autopush, Apple): HTTPS with
//! a certificate from a CA made here (the server must be told to trust it), HTTP/2 offered by
//! ALPN, and each request checked as a push service checks it — `TTL` present, `aes128gcm` body
//! of at most 4,096 bytes (else 413), and a VAPID JWT signed with the server's key for this
//! origin (else 403). Tests decrypt every body with the subscriber's private key (RFC 8291).
//! Also a black hole: a TCP listener that accepts connections and never answers.
#![allow(dead_code)] // shared by tests/api and tests/process.rs; not each uses every part
use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use awc::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

pub const SUBJECT: &str = "mailto:ops@podo.example";
/// FCM's and Mozilla's limit on an encrypted push message.
pub const MAX_RECORD: usize = 4096;

/// What the push service does for one endpoint: answer these statuses in turn (then 201), or hang.
#[derive(Clone, Default)]
pub struct Behaviour {
    pub statuses: VecDeque<u16>,
    pub hang: bool,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub endpoint: String,
    pub authorization: String,
    pub ttl: Option<String>,
    pub encoding: Option<String>,
    pub urgency: Option<String>,
    pub topic: Option<String>,
    pub http2: bool,
    /// What the service answered.
    pub status: u16,
    pub body: Vec<u8>,
    pub at: std::time::Instant,
}

#[derive(Clone, Default)]
struct State {
    behaviours: Arc<Mutex<HashMap<String, Behaviour>>>,
    received: Arc<Mutex<Vec<Received>>>,
    /// The VAPID key requests must be signed with, once the test knows it.
    vapid_key: Arc<Mutex<Option<String>>>,
    origin: String,
}

pub struct PushService {
    state: State,
    /// `https://127.0.0.1:<port>`.
    pub base: String,
    /// The PEM file of the CA that signed the service's certificate.
    pub ca_file: PathBuf,
    _ca: Arc<TestCa>,
}

/// The checks a push service makes before it accepts a message; `Err` is its answer.
fn verify(state: &State, req: &HttpRequest, body: &[u8]) -> Result<(), (u16, String)> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if header("ttl").and_then(|t| t.parse::<u64>().ok()).is_none() {
        return Err((400, "a TTL header is required".into()));
    }
    if header("content-encoding") != Some("aes128gcm") {
        return Err((415, "aes128gcm only".into()));
    }
    if body.len() > MAX_RECORD {
        return Err((413, format!("{} bytes is over {MAX_RECORD}", body.len())));
    }
    let expected = state.vapid_key.lock().unwrap().clone();
    if let Some(expected) = expected {
        check_vapid(
            header("authorization").unwrap_or_default(),
            &expected,
            &state.origin,
        )
        .map_err(|why| (403, why))?;
    }
    Ok(())
}

/// A VAPID `Authorization` header as RFC 8292 has it: `vapid t=<JWT>, k=<key>`, the JWT ES256
/// with `aud` = this origin, `exp` at most 24 h ahead (podo promises 12), and `sub`.
pub fn check_vapid(header: &str, public_key: &str, origin: &str) -> Result<Value, String> {
    let rest = header.strip_prefix("vapid ").ok_or("vapid scheme")?;
    let mut token = "";
    let mut key = "";
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => token = value,
            Some(("k", value)) => key = value,
            _ => {}
        }
    }
    if key != public_key {
        return Err(format!("k= {key} is not the server's key"));
    }
    let point = URL_SAFE_NO_PAD.decode(key).map_err(|e| e.to_string())?;
    if point.len() != 65 {
        return Err("k= is not a P-256 point".into());
    }
    let decoding = jsonwebtoken::DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&point[1..33]),
        &URL_SAFE_NO_PAD.encode(&point[33..65]),
    )
    .map_err(|e| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[origin]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(token, &decoding, &validation)
        .map_err(|e| format!("VAPID JWT: {e}"))?
        .claims;
    let exp = claims["exp"].as_i64().unwrap_or(0);
    let now = chrono::Utc::now().timestamp();
    if exp <= now || exp > now + 12 * 3600 {
        return Err(format!("exp {} s ahead", exp - now));
    }
    if claims["sub"] != SUBJECT {
        return Err(format!("sub {}", claims["sub"]));
    }
    Ok(claims)
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let endpoint = req.match_info().get("id").unwrap_or_default().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, hang) = match verify(&state, &req, &body) {
        Err((status, why)) => {
            log::warn!("test push service refused {endpoint}: {why}");
            (status, false)
        }
        Ok(()) => {
            let mut behaviours = state.behaviours.lock().unwrap();
            let behaviour = behaviours.entry(endpoint.clone()).or_default();
            (
                behaviour.statuses.pop_front().unwrap_or(201),
                behaviour.hang,
            )
        }
    };
    state.received.lock().unwrap().push(Received {
        endpoint,
        authorization: header("authorization").unwrap_or_default(),
        ttl: header("ttl"),
        encoding: header("content-encoding"),
        urgency: header("urgency"),
        topic: header("topic"),
        http2: req.version() == awc::http::Version::HTTP_2,
        status,
        body: body.to_vec(),
        at: std::time::Instant::now(),
    });
    if hang {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    HttpResponse::build(StatusCode::from_u16(status).unwrap()).finish()
}

/// A CA made by the test, and HTTPS server settings with certificates it signed for 127.0.0.1
/// and localhost. The server under test trusts it only when told to (`SSL_CERT_FILE`,
/// `push_ca_file`); the test push service and the fake FCM can share one, so that one bundle
/// names both.
pub struct TestCa {
    /// The PEM file of the CA.
    pub ca_file: PathBuf,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> Arc<TestCa> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "podo test push CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = ca.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("push-ca.pem");
        std::fs::write(&ca_file, cert.pem()).unwrap();
        Arc::new(TestCa {
            ca_file,
            cert,
            key,
            _dir: dir,
        })
    }

    /// rustls settings for an HTTPS service on 127.0.0.1 (HTTP/2 offered by ALPN), with a new
    /// certificate for `name` signed by this CA.
    pub fn server_tls(&self, name: &str) -> rustls::ServerConfig {
        use rcgen::{CertificateParams, DnType, KeyPair, SanType};
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        leaf.distinguished_name.push(DnType::CommonName, name);
        let leaf_cert = leaf.signed_by(&leaf_key, &self.cert, &self.key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tls
    }
}

impl PushService {
    /// A push service with a CA of its own.
    pub async fn start() -> PushService {
        Self::start_with(TestCa::new()).await
    }

    /// A push service whose certificate `ca` signed.
    pub async fn start_with(ca: Arc<TestCa>) -> PushService {
        let tls = ca.server_tls("podo test push service");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let state = State {
            origin: base.clone(),
            ..State::default()
        };
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1 << 20))
                .route("/push/{id}", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen_rustls_0_23(listener, tls)
        .unwrap();
        actix_web::rt::spawn(server.run());
        PushService {
            state,
            base,
            ca_file: ca.ca_file.clone(),
            _ca: ca,
        }
    }

    /// From now on, refuse requests not signed with this VAPID key (403), as push services do.
    pub fn require_vapid_key(&self, public_key: &str) {
        *self.state.vapid_key.lock().unwrap() = Some(public_key.to_owned());
    }

    pub fn behave(&self, id: &str, behaviour: Behaviour) {
        self.state
            .behaviours
            .lock()
            .unwrap()
            .insert(id.to_owned(), behaviour);
    }

    pub fn received(&self, id: &str) -> Vec<Received> {
        self.state
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.endpoint == id)
            .cloned()
            .collect()
    }

    pub fn received_total(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// Waits until `id` has received `n` requests (or `wait` passes); returns what it received.
    pub async fn wait_for(&self, id: &str, n: usize, wait: Duration) -> Vec<Received> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let got = self.received(id);
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A browser's push subscription: its key pair and auth secret.
pub struct Subscriber {
    pub endpoint: String,
    keys: ece::EcKeyComponents,
    pub p256dh: String,
    auth: [u8; 16],
}

impl Subscriber {
    pub fn new(base: &str, id: &str) -> Subscriber {
        let (pair, auth) = ece::generate_keypair_and_auth_secret().unwrap();
        Subscriber {
            endpoint: format!("{base}/push/{id}"),
            keys: pair.raw_components().unwrap(),
            p256dh: URL_SAFE_NO_PAD.encode(pair.pub_as_raw().unwrap()),
            auth,
        }
    }

    /// What `PushSubscription.toJSON()` gives.
    pub fn json(&self) -> Value {
        json!({"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": URL_SAFE_NO_PAD.encode(self.auth)}})
    }

    /// Checks the request like a push service does, then decrypts the notification.
    pub fn open(&self, request: &Received, public_key: &str, push_base: &str) -> Value {
        assert_eq!(request.status, 201, "the push service accepted it");
        assert_eq!(request.encoding.as_deref(), Some("aes128gcm"));
        assert!(
            request.body.len() <= MAX_RECORD,
            "{} bytes",
            request.body.len()
        );
        assert!(
            request
                .ttl
                .as_deref()
                .is_some_and(|t| t.parse::<u64>().is_ok()),
            "TTL header"
        );
        check_vapid(&request.authorization, public_key, push_base)
            .expect("a VAPID JWT signed with the server's key, for this origin");
        let plain = ece::decrypt(&self.keys, &self.auth, &request.body).expect("aes128gcm body");
        let notification: Value = serde_json::from_slice(&plain).unwrap();
        let urgency = if notification["kind"] == "chat" {
            "high"
        } else {
            "normal"
        };
        assert_eq!(request.urgency.as_deref(), Some(urgency), "{notification}");
        let topic = ["grant", "wish"]
            .into_iter()
            .find(|kind| notification["kind"] == *kind);
        assert_eq!(request.topic.as_deref(), topic, "{notification}");
        notification
    }
}

/// Accepts TCP connections and never answers: a dead push service that still takes connections.
pub struct BlackHole {
    pub base: String,
    held: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                keep.lock().unwrap().push(stream);
            }
        });
        BlackHole { base, held }
    }

    pub fn connections(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}
