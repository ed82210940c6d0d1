//! What an operator sees of the `meshca` binary itself: flags from `MESHCA_*` environment
//! variables, JSON on every line with `--log-format json`, shell completions and the man page.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_meshca");
const NO_KUBECONFIG: &str = "/nonexistent/meshca-tests/kubeconfig";

/// `meshca` with no `MESHCA_*` variable of the caller's environment, no Kubernetes.
fn meshca() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MESHCA_") {
            c.env_remove(k);
        }
    }
    c.env("KUBECONFIG", NO_KUBECONFIG)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("RUST_LOG");
    c
}

/// A started process whose stdout lines arrive on a channel; stderr goes to `stderr`.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(mut c: Command, stderr: &Path) -> Running {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running { child, lines }
}

impl Running {
    /// Stdout lines up to and including the first for which `last` holds (60 s at most: a
    /// bound on a hang, not a timed assertion).
    fn until(&self, stderr: &Path, last: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => {
                    let done = last(&l);
                    seen.push(l);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!(
                    "no such line; stdout {seen:?}; stderr:\n{}",
                    std::fs::read_to_string(stderr).unwrap_or_default()
                ),
            }
        }
    }
}

/// A serve option set only through the environment takes effect: no flag at all, the data
/// directory, both listen addresses and two server names (comma-separated) from `MESHCA_*`.
/// `MESHCA_NAMESPACE`, which a Deployment sets for the backends too, does not stop a file store.
#[test]
fn serve_takes_its_flags_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("from-env");
    let stderr = tmp.path().join("stderr.log");
    let mut c = meshca();
    c.arg("serve")
        .current_dir(tmp.path())
        .env("MESHCA_DATA_DIR", &data)
        .env("MESHCA_LISTEN", "127.0.0.1:0")
        .env("MESHCA_METRICS_LISTEN", "127.0.0.1:0")
        .env("MESHCA_SERVER_NAME", "one.example,two.example")
        // Also the backends' system namespace: ignored by --store file, not refused.
        .env("MESHCA_NAMESPACE", "kuma-system");
    let run = spawn(c, &stderr);
    let out = run.until(&stderr, |l| l == "meshca: ready");
    let grpc = out
        .iter()
        .find_map(|l| l.strip_prefix("meshca: grpc listening on "))
        .unwrap();
    assert!(!grpc.starts_with("127.0.0.1:5690 "), "{grpc}");
    assert!(
        out.iter()
            .any(|l| l.contains(&format!("data directory {}", data.display()))),
        "{out:?}"
    );
    assert!(!tmp.path().join("meshca-data").exists());
    let pem = std::fs::read(data.join("tls/server.pem")).unwrap();
    let der = pem::parse(pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.contents()).unwrap();
    let sans = cert.subject_alternative_name().unwrap().unwrap();
    let dns: Vec<String> = sans
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    for want in ["one.example", "two.example"] {
        assert!(dns.iter().any(|d| d == want), "{want} not in {dns:?}");
    }
}

/// An agent option set only through the environment takes effect: its required flags come
/// from `MESHCA_TAG` and `MESHCA_OUT_DIR`, and `MESHCA_SERVER` is the address it refuses.
#[test]
fn agent_takes_its_flags_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let out = meshca()
        .arg("agent")
        .env("MESHCA_TAG", "kuma.io/service=web,version=v1")
        .env("MESHCA_OUT_DIR", tmp.path().join("out"))
        .env("MESHCA_SERVER", "ftp://127.0.0.1:1")
        .env("MESHCA_ONCE", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ftp://127.0.0.1:1"), "{stderr}");
    // Without the variables the same command is a usage error (exit 2): they were what counted.
    let out = meshca().arg("agent").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Every line of `text` as a JSON object; returns their `fields.message`s.
fn json_messages(stream: &str, text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{stream}: not JSON ({e}): {l:?}\n{text}"));
            assert!(v.is_object(), "{stream}: not an object: {l}");
            v["fields"]["message"]
                .as_str()
                .unwrap_or_else(|| panic!("{stream}: no fields.message: {l}"))
                .to_owned()
        })
        .collect()
}

/// With `--log-format json` the startup lines on stdout and the logs on stderr are JSON, every
/// one of them, until and after `ready`.
#[test]
fn json_logs_cover_the_startup_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let stderr = tmp.path().join("stderr.log");
    let mut c = meshca();
    c.args(["serve", "--log-format", "json", "--data-dir"])
        .arg(tmp.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]);
    let mut run = spawn(c, &stderr);
    let out = run.until(&stderr, |l| l.contains(r#""message":"ready""#));
    let _ = run.child.kill();
    let _ = run.child.wait();
    let mut out = out.join("\n");
    while let Ok(l) = run.lines.recv_timeout(Duration::from_secs(5)) {
        out.push('\n');
        out.push_str(&l);
    }
    let said = json_messages("stdout", &out);
    assert!(
        said[0].starts_with("grpc listening on 127.0.0.1:"),
        "{said:?}"
    );
    assert!(
        said[1].starts_with("metrics listening on 127.0.0.1:"),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|m| m.starts_with("try: meshca issue --server")),
        "{said:?}"
    );
    assert_eq!(said.last().map(String::as_str), Some("ready"));
    let log = std::fs::read_to_string(&stderr).unwrap();
    let logged = json_messages("stderr", &log);
    assert!(!logged.is_empty());
}

/// A start that fails after the flags parsed ends with a JSON error line, and nothing else on
/// either stream is anything but JSON.
#[test]
fn json_logs_cover_the_final_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = meshca()
        .args(["serve", "--log-format", "json", "--data-dir"])
        .arg(tmp.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--mesh-config", "/nonexistent/meshca-meshes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    json_messages("stdout", &stdout);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let messages = json_messages("stderr", &stderr);
    let last = messages.last().expect("an error line");
    assert_eq!(
        last,
        "error: --mesh-config /nonexistent/meshca-meshes: is not a directory of Mesh YAML files"
    );
    let v: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(v["level"], "ERROR");
}

/// A usage error (a flag clap refuses) is one JSON line too, when JSON was asked for on the
/// command line or in the environment; it still exits 2, and without JSON it stays clap's text.
#[test]
fn json_logs_cover_usage_errors() {
    for (args, env) in [
        (
            vec!["--log-format", "json", "serve", "--no-such-flag"],
            None,
        ),
        (
            vec!["serve", "--log-format=json", "--listen", "not-an-address"],
            None,
        ),
        (vec!["serve", "--no-such-flag"], Some("json")),
    ] {
        let mut c = meshca();
        c.args(&args);
        if let Some(v) = env {
            c.env("MESHCA_LOG_FORMAT", v);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let messages = json_messages("stderr", &stderr);
        assert_eq!(messages.len(), 1, "{stderr}");
        assert!(messages[0].starts_with("usage: error:"), "{messages:?}");
    }
    let out = meshca().args(["serve", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: unexpected argument"), "{stderr}");
}

const COMMANDS: [&str; 8] = [
    "serve",
    "issue",
    "validate",
    "inspect",
    "agent",
    "token",
    "completions",
    "man",
];

/// `meshca completions SHELL` prints a script that knows the commands, for every shell.
#[test]
fn completions_name_the_commands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = meshca().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        for c in COMMANDS {
            assert!(script.contains(c), "{shell}: no {c} in\n{script}");
        }
        if shell == "bash" {
            assert!(script.contains("complete -F _meshca"), "{script}");
            assert!(script.contains("--tls-cert"), "{script}");
        }
    }
    let out = meshca().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The first line of a page after clap_mangen's two-line preamble (which defines the
/// apostrophe string for groff and other troffs alike).
fn title(page: &str) -> &str {
    let mut lines = page.lines();
    assert_eq!(lines.next(), Some(r".ie \n(.g .ds Aq \(aq"), "{page}");
    assert_eq!(lines.next(), Some(".el .ds Aq '"), "{page}");
    lines.next().unwrap_or_default()
}

/// `meshca man` prints a roff page naming every command; `meshca man serve` the command's own.
#[test]
fn man_page_names_the_commands() {
    let out = meshca().arg("man").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(title(&page).starts_with(".TH meshca 1 "), "{page}");
    for c in COMMANDS {
        assert!(
            page.contains(&format!("meshca\\-{c}(1)")),
            "no {c} in\n{page}"
        );
    }
    let out = meshca().args(["man", "serve"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(title(&page).starts_with(".TH meshca-serve 1 "), "{page}");
    assert!(page.contains("MESHCA_DATA_DIR"), "{page}");
    let out = meshca().args(["man", "nosuch"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("serve"));
}
