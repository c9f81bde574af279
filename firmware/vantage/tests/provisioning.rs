//! Central provisioning against a local HTTPS server (a test CA, a bearer token): new targets
//! appear, local ones win clashes, a broken file is rejected and the old set kept, the token is
//! required, and the last good copy survives a restart with the server gone.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// A tiny HTTPS server: serves `targets.toml` from its directory to requests with the right
/// bearer token (401 otherwise) for any `.toml` path, any other path's file by its base name
/// without a token (a bundle), and logs each request's answer.
const SERVER: &str = r#"
import http.server, ssl, sys, os
d, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        toml = self.path.endswith(".toml")
        ok = not toml or self.headers.get("Authorization") == "Bearer " + token
        with open(os.path.join(d, "requests.log"), "a") as log:
            log.write(("200" if ok else "401") + " " + self.path + "\n")
        if not ok:
            self.send_response(401); self.end_headers(); return
        name = "targets.toml" if toml else os.path.basename(self.path)
        body = open(os.path.join(d, name), "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(d, "server.pem"), os.path.join(d, "server.key"))
s = http.server.HTTPServer(("127.0.0.1", port), H)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;

fn sh(args: &[&str], dir: &Path) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a server certificate for 127.0.0.1 signed by it.
fn make_certs(dir: &Path) {
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    sh(
        &[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=vantage test CA",
        ],
        dir,
    );
    sh(
        &[
            "openssl",
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        dir,
    );
    sh(
        &[
            "openssl",
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
        dir,
    );
}

fn start_server(dir: &Path, port: u16) -> Proc {
    std::fs::write(dir.join("server.py"), SERVER).unwrap();
    let child = Command::new("python3")
        .arg(dir.join("server.py"))
        .arg(dir)
        .arg(port.to_string())
        .arg("s3cret-token")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let p = Proc(child);
    wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    p
}

fn target(name: &str, host: &str) -> String {
    format!(
        "[[targets]]\nname = \"{name}\"\nhost = \"{host}\"\nprobes = [\"ping\"]\ninterval = \"1s\"\n"
    )
}

fn status(addr: std::net::SocketAddr) -> serde_json::Value {
    let (code, body) = http_get(addr, "/api/provisioning").unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn provisioned_targets_over_https_with_a_token() {
    if !require(have("openssl") && have("python3"), "openssl and python3") {
        return;
    }
    let dir = TempDir::new("prov");
    make_certs(&dir.0);
    let port = free_port();
    std::fs::write(
        dir.path("targets.toml"),
        format!(
            "{}{}",
            target("central-1", "127.0.0.2"),
            target("local-1", "127.0.0.9")
        ),
    )
    .unwrap();
    let _server = start_server(&dir.0, port);
    std::fs::write(dir.path("token"), "s3cret-token\n").unwrap();
    let cfg = dir.path("vantage.toml");
    let write_cfg = |token_file: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[provisioning]\nurl = \"https://127.0.0.1:{port}/probes/targets.toml\"\ntoken_file = \"{}\"\nca_file = \"{}\"\nrefresh = \"10s\"\n{}",
                dir.path(token_file).display(),
                dir.path("ca.pem").display(),
                target("local-1", "127.0.0.1")
            ),
        )
        .unwrap();
    };
    write_cfg("token");
    let data = dir.path("data");
    std::fs::create_dir_all(&data).unwrap();

    // New targets appear; the local target of the same name wins and the clash is shown.
    let (daemon, addr) = start_daemon(Some(&cfg), &data);
    wait_until(Duration::from_secs(15), || {
        http_get(addr, "/metrics").is_ok_and(|(_, m)| {
            metric(
                &m,
                r#"vantage_probe_success{probe="ping",target="central-1"}"#,
            )
            .is_some()
        })
    });
    // And it is probed (where this machine lets us open ICMP sockets).
    if vantage_core::net::KernelSockets::default().can_open() {
        wait_until(Duration::from_secs(10), || {
            http_get(addr, "/metrics").is_ok_and(|(_, m)| {
                metric(
                    &m,
                    r#"vantage_probe_success{probe="ping",target="central-1"}"#,
                ) == Some(1.0)
            })
        });
    }
    let st = status(addr);
    assert_eq!(st["targets"], serde_json::json!(["central-1"]), "{st}");
    assert_eq!(
        st["overridden_by_local"],
        serde_json::json!(["local-1"]),
        "{st}"
    );
    assert_eq!(st["source"], "remote");
    assert!(st["last_error"].is_null(), "{st}");
    let (_, m) = http_get(addr, "/metrics").unwrap();
    assert_eq!(
        metric(&m, "vantage_provisioning_last_fetch_successful"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(metric(&m, "vantage_provisioning_targets"), Some(1.0));
    assert_eq!(
        metric(&m, "vantage_provisioning_overridden_targets"),
        Some(1.0)
    );
    assert_eq!(metric(&m, "vantage_targets"), Some(2.0));
    assert!(
        std::fs::read_to_string(data.join("provisioned-targets.toml"))
            .unwrap()
            .contains("central-1")
    );

    // The web page shows this state (from /api/status); the clash is reported.
    assert_eq!(
        st["overridden_by_local"],
        serde_json::json!(["local-1"]),
        "{st}"
    );

    // A changed file is picked up by the periodic refresh (10 s), with no reload.
    std::fs::write(
        dir.path("targets.toml"),
        format!(
            "{}{}",
            target("central-1", "127.0.0.2"),
            target("central-2", "127.0.0.3")
        ),
    )
    .unwrap();
    wait_until(Duration::from_secs(15), || {
        status(addr)["targets"] == serde_json::json!(["central-1", "central-2"])
    });

    // A broken file is rejected, reported, and the running set stays. (From here on a reload
    // triggers each fetch at once instead of waiting for the refresh.)
    std::fs::write(
        dir.path("targets.toml"),
        "[[targets]]\nname = \"bad name\"\nhost = \"$(reboot)\"\nprobes = [\"ping\"]\n",
    )
    .unwrap();
    assert_eq!(http(addr, "POST", "/-/reload").unwrap().0, 200);
    wait_until(Duration::from_secs(10), || {
        status(addr)["last_error"].is_string()
    });
    let st = status(addr);
    let err = st["last_error"].as_str().unwrap();
    assert!(
        err.contains("targets[0].name") && err.contains("targets[0].host"),
        "{err}"
    );
    assert_eq!(
        st["targets"],
        serde_json::json!(["central-1", "central-2"]),
        "{st}"
    );
    let (_, m) = http_get(addr, "/metrics").unwrap();
    assert_eq!(
        metric(&m, "vantage_provisioning_last_fetch_successful"),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &m,
            r#"vantage_provisioning_fetches_total{result="invalid"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric(&m, "vantage_targets"), Some(3.0));
    assert!(
        metric(
            &m,
            r#"vantage_probe_success{probe="ping",target="central-2"}"#
        )
        .is_some()
    );
    // The web page shows the error as text (never as HTML; see web/tests.rs).
    assert!(err.contains("targets[0].host: contains '$'"), "{err}");
    // The cache keeps the last good copy, not the broken one.
    assert!(
        std::fs::read_to_string(data.join("provisioned-targets.toml"))
            .unwrap()
            .contains("central-2")
    );

    // The token is required: a wrong one is refused by the server and reported; nothing changes.
    std::fs::write(
        dir.path("targets.toml"),
        format!(
            "{}{}",
            target("central-1", "127.0.0.2"),
            target("central-2", "127.0.0.3")
        ),
    )
    .unwrap();
    std::fs::write(dir.path("wrong-token"), "not-the-token\n").unwrap();
    write_cfg("wrong-token");
    assert_eq!(http(addr, "POST", "/-/reload").unwrap().0, 200);
    // "HTTP 401", not "401": the previous error names the URL, whose port may contain 401.
    wait_until(Duration::from_secs(10), || {
        status(addr)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 401"))
    });
    let (_, m) = http_get(addr, "/metrics").unwrap();
    assert!(
        metric(&m, r#"vantage_provisioning_fetches_total{result="error"}"#).unwrap() >= 1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "vantage_targets"), Some(3.0));
    let log = std::fs::read_to_string(dir.path("requests.log")).unwrap();
    assert!(log.lines().any(|l| l.starts_with("401")), "{log}");
    assert!(
        log.lines().all(|l| l.ends_with("/probes/targets.toml")),
        "{log}"
    );
    drop(daemon);

    // Restart with the server gone: the last good copy is used.
    drop(_server);
    let (_daemon, addr) = start_daemon(Some(&cfg), &data);
    let st = status(addr);
    assert_eq!(st["source"], "cache", "{st}");
    assert_eq!(
        st["targets"],
        serde_json::json!(["central-1", "central-2"]),
        "{st}"
    );
    wait_until(Duration::from_secs(15), || {
        http_get(addr, "/metrics").is_ok_and(|(_, m)| {
            metric(
                &m,
                r#"vantage_probe_success{probe="ping",target="central-2"}"#,
            )
            .is_some()
                && metric(&m, r#"vantage_provisioning_fetches_total{result="error"}"#)
                    .is_some_and(|v| v >= 1.0)
        })
    });
}

#[test]
fn an_untrusted_certificate_is_refused() {
    if !require(have("openssl") && have("python3"), "openssl and python3") {
        return;
    }
    let dir = TempDir::new("prov-tls");
    make_certs(&dir.0);
    let port = free_port();
    std::fs::write(dir.path("targets.toml"), target("central-1", "127.0.0.2")).unwrap();
    let _server = start_server(&dir.0, port);
    let cfg = dir.path("vantage.toml");
    // No ca_file: the test CA is not among the trusted roots.
    std::fs::write(
        &cfg,
        format!("[provisioning]\nurl = \"https://127.0.0.1:{port}/t.toml\"\ntoken = \"s3cret-token\"\n{}", target("local-1", "127.0.0.1")),
    )
    .unwrap();
    let (_daemon, addr) = start_daemon(Some(&cfg), &dir.0);
    wait_until(Duration::from_secs(10), || {
        status(addr)["last_error"].is_string()
    });
    let st = status(addr);
    let err = st["last_error"].as_str().unwrap().to_lowercase();
    assert!(err.contains("certificate"), "{err}");
    assert_eq!(st["targets"], serde_json::json!([]));
    assert!(
        !std::fs::read_to_string(dir.path("requests.log"))
            .unwrap_or_default()
            .contains("200")
    );
}

/// A fleet whose provisioning server has a private CA serves its update bundles the same way:
/// the bundle's download trusts `[provisioning] ca_file` as the provisioning fetch does.
#[test]
fn an_update_bundle_is_downloaded_from_a_server_of_the_provisioning_ca() {
    if !require(have("openssl") && have("python3"), "openssl and python3") {
        return;
    }
    let dir = TempDir::new("prov-update");
    make_certs(&dir.0);
    let port = free_port();
    std::fs::write(dir.path("targets.toml"), target("central-1", "127.0.0.2")).unwrap();
    // Not a real bundle: the download is what is checked here, the install then fails.
    let bundle = b"not a bundle, served over the private CA";
    std::fs::write(dir.path("b.raucb"), bundle).unwrap();
    let sha = ring::digest::digest(&ring::digest::SHA256, bundle);
    let sha: String = sha.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let _server = start_server(&dir.0, port);
    let cfg = dir.path("vantage.toml");
    std::fs::write(
        &cfg,
        format!(
            "[provisioning]\nurl = \"https://127.0.0.1:{port}/t.toml\"\ntoken = \"s3cret-token\"\nca_file = \"{}\"\n\
             [update]\nurl = \"https://127.0.0.1:{port}/b.raucb\"\nversion = \"99.0.0\"\nsha256 = \"{sha}\"\nreboot = false\n{}",
            dir.path("ca.pem").display(),
            target("local-1", "127.0.0.1")
        ),
    )
    .unwrap();
    let data = dir.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let (_daemon, _addr) = start_daemon(Some(&cfg), &data);
    // The loop looks at the offer at start; one look a minute after that.
    wait_until(Duration::from_secs(75), || {
        std::fs::read_to_string(dir.path("requests.log"))
            .unwrap_or_default()
            .contains("200 /b.raucb")
    });
    assert_eq!(
        std::fs::read_to_string(data.join("update-attempted")).unwrap(),
        "99.0.0"
    );
}
