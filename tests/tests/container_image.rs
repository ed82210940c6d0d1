//! The container image, as far as it can be checked without pulling or building one: the
//! `Containerfile` at the repository root (two stages, the builder on the official Rust image at
//! the workspace's rust-version, `cargo build --release --locked --bin meshca`, the runtime
//! distroless cc of the same Debian release as the builder, as uid/gid 65532, no `ADD` and no
//! secrets, the `EXPOSE`d ports those of the binary's defaults, of its `CMD` and of the
//! Kubernetes Deployment and Service), the `.dockerignore` (keeps target/ and .git out, never
//! what the build needs), and the meshca binary this suite built: it may link dynamically only
//! what distroless cc ships (glibc, libgcc_s, libstdc++), and no glibc symbol newer than the
//! runtime's glibc.
//!
//! The binary is `target/<profile>/meshca`, next to this test's own executable (`$MESHCA_BIN`
//! overrides it): `cargo test --workspace` builds it; with `-p meshca-tests` alone, build it
//! first (`cargo build -p issuer-svc --bin meshca`). `readelf` (binutils) and `ldd` (libc-bin)
//! read it; scripts/test installs binutils where it is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use serde_json::Value;

/// Debian releases distroless has images for: codename of the Rust image's tag → the Debian
/// version of the distroless tag (`cc-debian12`) and the glibc it ships.
const DEBIAN: [(&str, u32, (u32, u32)); 2] = [("bookworm", 12, (2, 36)), ("trixie", 13, (2, 41))];

/// The nonroot user of distroless images, and of the Deployment's securityContext.
const NONROOT: u32 = 65532;

/// What distroless cc provides to link against: glibc (with the dynamic loader), libgcc_s and
/// libstdc++ (its `cc` layer: libgcc-s1, libstdc++6, libgomp1), and the kernel's vDSO, which
/// `ldd` lists though no file backs it. libssl/libcrypto are in the image too, but meshca must
/// not link OpenSSL (rustls on aws-lc-rs only), so they are left out on purpose.
fn provided(lib: &str) -> bool {
    const EXACT: [&str; 12] = [
        "libc.so.6",
        "libm.so.6",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "libresolv.so.2",
        "libutil.so.1",
        "libgcc_s.so.1",
        "libstdc++.so.6",
        "libgomp.so.1",
        "linux-vdso.so.1",
        "linux-gate.so.1",
    ];
    EXACT.contains(&lib)
        || lib.starts_with("ld-linux")
        || lib.starts_with("ld64.so")
        || lib.starts_with("linux-vdso")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

// === the Containerfile ===

/// One instruction: its keyword (upper case) and the rest of its line(s).
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

/// One build stage: `FROM image [AS name]` and its instructions.
#[derive(Debug)]
struct Stage {
    image: String,
    name: Option<String>,
    body: Vec<Instruction>,
}

/// The instructions of a Containerfile: comment lines dropped, `\` continuations joined.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(cont) = t.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(t);
        let full = std::mem::take(&mut pending);
        let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        out.push(Instruction {
            keyword: keyword.to_uppercase(),
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
        });
    }
    assert!(pending.is_empty(), "a continuation at the end of the file");
    out
}

/// `text` with `${NAME}` and `$NAME` of `args` replaced.
fn substitute(text: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (k, v) in args {
        out = out.replace(&format!("${{{k}}}"), v);
        out = out.replace(&format!("${k}"), v);
    }
    assert!(!out.contains('$'), "{text}: an ARG without a default");
    out
}

/// The global `ARG`s (before the first `FROM`, with their defaults) and the stages.
fn stages(all: &[Instruction]) -> (BTreeMap<String, String>, Vec<Stage>) {
    let mut args = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for i in all {
        match (i.keyword.as_str(), stages.last_mut()) {
            ("FROM", _) => {
                let words: Vec<&str> = i.args.split_whitespace().collect();
                let (image, name) = match words.as_slice() {
                    [image] => (*image, None),
                    [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
                        (*image, Some((*name).to_owned()))
                    }
                    _ => panic!("FROM {}: expected `FROM image [AS name]`", i.args),
                };
                stages.push(Stage {
                    image: substitute(image, &args),
                    name,
                    body: Vec::new(),
                });
            }
            ("ARG", None) => {
                let (k, v) = i
                    .args
                    .split_once('=')
                    .unwrap_or_else(|| panic!("global ARG {} has no default", i.args));
                args.insert(k.to_owned(), v.trim_matches('"').to_owned());
            }
            (_, None) => panic!("{} before the first FROM", i.keyword),
            (_, Some(stage)) => stage.body.push(i.clone()),
        }
    }
    (args, stages)
}

/// The exec form `["a", "b"]` of ENTRYPOINT or CMD, as a list.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("{args}: not the exec form (a JSON array): {e}"))
}

fn containerfile() -> (BTreeMap<String, String>, Vec<Stage>) {
    let text = fs::read_to_string(root().join("Containerfile"))
        .expect("a Containerfile at the repository root");
    stages(&instructions(&text))
}

/// The workspace's `rust-version`.
fn rust_version() -> String {
    let text = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("rust-version"))
        .expect("rust-version in Cargo.toml");
    line.split('"').nth(1).expect("a quoted version").to_owned()
}

/// The name of issuer-svc's binary (its `[[bin]]`).
fn bin_name() -> String {
    let text = fs::read_to_string(root().join("issuer-svc/Cargo.toml")).unwrap();
    let after = text.split("[[bin]]").nth(1).expect("[[bin]] in issuer-svc");
    let line = after
        .lines()
        .find(|l| l.trim_start().starts_with("name"))
        .expect("its name");
    line.split('"').nth(1).unwrap().to_owned()
}

/// Debian release of a builder tag `...:1.94.1-trixie` (or `-slim-trixie`): (codename,
/// version, glibc).
fn builder_debian(image: &str) -> (&'static str, u32, (u32, u32)) {
    let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
    DEBIAN
        .into_iter()
        .find(|(codename, _, _)| tag.ends_with(&format!("-{codename}")))
        .unwrap_or_else(|| {
            panic!("{image}: the builder's tag names no Debian release distroless has")
        })
}

/// The Debian version and glibc of the runtime image `gcr.io/distroless/cc-debianNN:nonroot`.
fn runtime_debian(image: &str) -> (u32, (u32, u32)) {
    let image = image.split('@').next().unwrap();
    let rest = image
        .strip_prefix("gcr.io/distroless/cc-debian")
        .unwrap_or_else(|| panic!("{image}: the runtime is not gcr.io/distroless/cc-debianNN"));
    let (version, tag) = rest.split_once(':').expect("a tag");
    assert_eq!(tag, "nonroot", "{image}: the nonroot variant");
    let version: u32 = version.parse().unwrap();
    let (_, _, glibc) = DEBIAN
        .into_iter()
        .find(|(_, v, _)| *v == version)
        .unwrap_or_else(|| panic!("{image}: no such distroless release"));
    (version, glibc)
}

/// The port of an address `0.0.0.0:5690`.
fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr}: no port"))
}

/// The value after `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

#[test]
fn containerfile_builds_locked_and_runs_on_distroless_as_nonroot() {
    let (_, stages) = containerfile();
    assert_eq!(stages.len(), 2, "two stages: a builder and the runtime");
    let (builder, runtime) = (&stages[0], &stages[1]);

    // The builder: the official Rust image at the workspace's rust-version.
    let name = builder
        .name
        .as_deref()
        .expect("the builder stage is named (AS ...)");
    let image = builder
        .image
        .strip_prefix("docker.io/library/")
        .unwrap_or(&builder.image);
    let tag = image.strip_prefix("rust:").unwrap_or_else(|| {
        panic!(
            "{}: the builder is not the official rust image",
            builder.image
        )
    });
    assert!(
        tag.starts_with(&format!("{}-", rust_version())),
        "{}: the builder's Rust is not the workspace's rust-version {}",
        builder.image,
        rust_version()
    );
    // The same Debian release on both sides: a builder newer than the runtime would make a
    // binary that asks for glibc symbols the runtime does not have.
    let (codename, builder_version, _) = builder_debian(&builder.image);
    let (runtime_version, _) = runtime_debian(&runtime.image);
    assert_eq!(
        builder_version, runtime_version,
        "the builder is Debian {builder_version} ({codename}), the runtime Debian {runtime_version}"
    );

    let cargo: Vec<&Instruction> = builder
        .body
        .iter()
        .filter(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .collect();
    assert_eq!(cargo.len(), 1, "one `cargo build` in the builder");
    let words: Vec<&str> = cargo[0].args.split_whitespace().collect();
    for flag in ["--release", "--locked"] {
        assert!(words.contains(&flag), "cargo build without {flag}");
    }
    let bin = bin_name();
    assert!(
        words.windows(2).any(|w| w == ["--bin", bin.as_str()]),
        "cargo build does not name --bin {bin}"
    );

    // The runtime holds the binary alone, copied from the builder, and runs it as nonroot.
    let copies: Vec<&Instruction> = runtime
        .body
        .iter()
        .filter(|i| i.keyword == "COPY")
        .collect();
    assert_eq!(copies.len(), 1, "the runtime copies one thing: the binary");
    let copy: Vec<&str> = copies[0].args.split_whitespace().collect();
    assert_eq!(
        copy.first().copied(),
        Some(format!("--from={name}").as_str())
    );
    let dest = *copy.last().unwrap();
    let entrypoint = runtime
        .body
        .iter()
        .rfind(|i| i.keyword == "ENTRYPOINT")
        .map(|i| exec_form(&i.args))
        .expect("an ENTRYPOINT");
    assert_eq!(
        entrypoint,
        [dest.to_owned()],
        "ENTRYPOINT is the copied binary"
    );
    assert!(dest.ends_with(&format!("/{bin}")), "{dest}");

    let user = runtime
        .body
        .iter()
        .rfind(|i| i.keyword == "USER")
        .map(|i| i.args.clone())
        .expect("a USER in the runtime stage");
    assert!(
        [
            format!("{NONROOT}:{NONROOT}"),
            "nonroot:nonroot".into(),
            "nonroot".into()
        ]
        .contains(&user),
        "USER {user}: the runtime runs as nonroot ({NONROOT}:{NONROOT})"
    );
}

#[test]
fn containerfile_fetches_nothing_and_holds_no_secrets() {
    let text = fs::read_to_string(root().join("Containerfile")).unwrap();
    let all = instructions(&text);
    const SECRETISH: [&str; 6] = [
        "TOKEN",
        "PASSWORD",
        "SECRET",
        "PRIVATE",
        "CREDENTIAL",
        "_KEY",
    ];
    for i in &all {
        // ADD fetches URLs and unpacks archives; COPY is all an image of a binary needs.
        assert_ne!(i.keyword, "ADD", "ADD {}: use COPY", i.args);
        if i.keyword == "ENV" || i.keyword == "ARG" {
            let upper = i.args.to_uppercase();
            for word in SECRETISH {
                assert!(
                    !upper.contains(word),
                    "{} {}: build args and environment end up in the image's history",
                    i.keyword,
                    i.args
                );
            }
        }
        let url = i.args.contains("http://") || i.args.contains("https://");
        assert!(
            !url || i.keyword == "LABEL",
            "{} {}: nothing is downloaded outside cargo's --locked registry fetch",
            i.keyword,
            i.args
        );
    }
}

/// The defaults of `meshca serve --listen` and `--metrics-listen`, from its `--help`.
fn binary_default_ports(bin: &Path) -> (u16, u16) {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--help"]);
    // Values set in this environment would show in the help beside the defaults.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MESHCA_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run meshca serve --help");
    assert!(out.status.success(), "meshca serve --help failed");
    let help = String::from_utf8(out.stdout).unwrap();
    let default_of = |flag: &str| {
        // The option's block: from its line to the next option's.
        let mut block = String::new();
        let mut inside = false;
        for line in help.lines() {
            let t = line.trim_start();
            if t.starts_with('-') {
                inside = t.split([' ', '=', ',']).any(|w| w == flag);
            }
            if inside {
                block.push_str(t);
                block.push(' ');
            }
        }
        let joined = block.split_whitespace().collect::<Vec<_>>().join(" ");
        let default = joined
            .split("[default: ")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .unwrap_or_else(|| panic!("no default for {flag} in meshca serve --help:\n{help}"));
        port_of(default)
    };
    (default_of("--listen"), default_of("--metrics-listen"))
}

#[test]
fn exposed_ports_are_the_binarys_the_commands_and_the_manifests() {
    let (_, stages) = containerfile();
    let runtime = stages.last().unwrap();
    let exposed: BTreeSet<u16> = runtime
        .body
        .iter()
        .filter(|i| i.keyword == "EXPOSE")
        .flat_map(|i| {
            i.args
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
            assert_eq!(proto, "tcp", "EXPOSE {p}");
            port.parse().unwrap()
        })
        .collect();

    // The binary's defaults.
    let (grpc, metrics) = binary_default_ports(&meshca_binary());
    assert_eq!(
        exposed,
        BTreeSet::from([grpc, metrics]),
        "EXPOSE vs the binary's defaults"
    );

    // The image's default command listens on them, on every interface.
    let cmd = runtime
        .body
        .iter()
        .rfind(|i| i.keyword == "CMD")
        .map(|i| exec_form(&i.args))
        .expect("a CMD");
    assert_eq!(cmd.first().map(String::as_str), Some("serve"));
    for (flag, port) in [("--listen", grpc), ("--metrics-listen", metrics)] {
        let addr = flag_value(&cmd, flag).unwrap_or_else(|| panic!("CMD without {flag}"));
        assert_eq!(addr, format!("0.0.0.0:{port}"), "CMD {flag}");
    }

    // The Deployment's container ports and args, and the Service's ports.
    let deploy = root().join("deploy/kubernetes");
    let d: Value =
        yaml_serde::from_str(&fs::read_to_string(deploy.join("40-deployment.yaml")).unwrap())
            .unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let container_ports: BTreeMap<String, u16> = c["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                u16::try_from(p["containerPort"].as_u64().unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        container_ports.values().copied().collect::<BTreeSet<_>>(),
        exposed,
        "the Deployment's containerPorts vs EXPOSE"
    );
    let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
    for (flag, port) in [("--listen", grpc), ("--metrics-listen", metrics)] {
        let addr =
            flag_value(&args, flag).unwrap_or_else(|| panic!("the Deployment without {flag}"));
        assert_eq!(port_of(addr), port, "the Deployment's {flag}");
    }
    let svc: Value =
        yaml_serde::from_str(&fs::read_to_string(deploy.join("50-service.yaml")).unwrap()).unwrap();
    let mut service_ports = BTreeSet::new();
    for p in svc["spec"]["ports"].as_array().expect("Service ports") {
        let port = u16::try_from(p["port"].as_u64().unwrap()).unwrap();
        let target = match &p["targetPort"] {
            Value::String(name) => container_ports[name],
            Value::Number(n) => u16::try_from(n.as_u64().unwrap()).unwrap(),
            _ => port,
        };
        assert_eq!(port, target, "the Service port {port} forwards to {target}");
        service_ports.insert(port);
    }
    assert_eq!(service_ports, exposed, "the Service's ports vs EXPOSE");

    // The Deployment runs as the image's user.
    assert_eq!(
        d["spec"]["template"]["spec"]["securityContext"]["runAsUser"].as_u64(),
        Some(u64::from(NONROOT))
    );
}

// === .dockerignore ===

/// Whether `pattern` (a .dockerignore line, `*` within one path element, a leading `**/` for any
/// depth) matches `path` or one of its parents.
fn ignores(pattern: &str, path: &str) -> bool {
    fn glob(p: &str, s: &str) -> bool {
        match p.split_once('*') {
            None => p == s,
            Some((head, tail)) => {
                s.starts_with(head)
                    && (0..=s.len() - head.len()).any(|i| {
                        let rest = &s[head.len() + i..];
                        !s[head.len()..head.len() + i].contains('/') && glob(tail, rest)
                    })
            }
        }
    }
    let p = pattern.trim_start_matches('/').trim_end_matches('/');
    let (any_depth, p) = match p.strip_prefix("**/") {
        Some(rest) => (true, rest),
        None => (false, p),
    };
    let elements: Vec<&str> = path.split('/').collect();
    (0..elements.len()).any(|start| {
        (any_depth || start == 0)
            && (start + 1..=elements.len()).any(|end| glob(p, &elements[start..end].join("/")))
    })
}

/// The workspace members of the root Cargo.toml.
fn members() -> Vec<String> {
    let text = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let list = text
        .split("members = [")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .expect("workspace members");
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn dockerignore_keeps_out_the_build_output_and_nothing_the_build_needs() {
    let text = fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        patterns.iter().all(|p| !p.starts_with('!')),
        "no exceptions: this check does not model them"
    );
    for out in [
        "target/debug/meshca",
        ".git/HEAD",
        "fuzz/Cargo.lock",
        "meshca-data/tls",
    ] {
        assert!(
            patterns.iter().any(|p| ignores(p, out)),
            "{out} is sent to the build"
        );
    }
    // The workspace (every member's manifest and sources), its lock file, and the README that
    // meshca's crate docs include.
    let mut needed: Vec<String> = [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "issuer-svc/proto/meshca.proto",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for m in members() {
        assert!(root().join(&m).join("Cargo.toml").is_file(), "member {m}");
        needed.push(format!("{m}/Cargo.toml"));
        needed.push(format!("{m}/src/lib.rs"));
    }
    for n in &needed {
        for p in &patterns {
            assert!(
                !ignores(p, n),
                ".dockerignore's {p} leaves {n} out of the build"
            );
        }
    }
    // The matcher itself.
    assert!(ignores("**/*.pyc", "tests/peers/x/y.pyc"));
    assert!(ignores("target/", "target"));
    assert!(!ignores("fuzz/", "fuzz-targets/src/lib.rs"));
    assert!(!ignores("target/", "tests/src/target.rs"));
}

// === the binary ===

/// The meshca binary of this build: `$MESHCA_BIN`, or `meshca` in the profile directory above
/// this test's executable (`target/debug/deps/container_image-…` → `target/debug/meshca`).
fn meshca_binary() -> PathBuf {
    let bin = std::env::var_os("MESHCA_BIN").map_or_else(
        || {
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>");
            profile_dir.join(format!("{}{}", bin_name(), std::env::consts::EXE_SUFFIX))
        },
        PathBuf::from,
    );
    assert!(
        bin.is_file(),
        "{}: no meshca binary. `cargo test --workspace` builds it; with `-p meshca-tests` \
         alone run `cargo build -p issuer-svc --bin meshca` first (or set MESHCA_BIN)",
        bin.display()
    );
    // A binary older than issuer-svc's sources is another revision's: its ports and libraries
    // say nothing about this one.
    let built = fs::metadata(&bin).unwrap().modified().unwrap();
    let newest = newest_mtime(&root().join("issuer-svc/src"));
    assert!(
        built >= newest,
        "{} is older than issuer-svc/src: rebuild it (cargo build -p issuer-svc --bin meshca)",
        bin.display()
    );
    bin
}

fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = if e.file_type().unwrap().is_dir() {
            newest_mtime(&e.path())
        } else {
            e.metadata().unwrap().modified().unwrap()
        };
        newest = newest.max(t);
    }
    newest
}

/// Runs `tool args… bin` and returns its stdout.
fn run(tool: &str, args: &[&str], bin: &Path) -> String {
    let out = Command::new(tool)
        .args(args)
        .arg(bin)
        .output()
        .unwrap_or_else(|e| {
            panic!("{tool}: {e} (readelf is in Debian's binutils, ldd in libc-bin; scripts/test installs them)")
        });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The libraries the binary names (DT_NEEDED), from `readelf -d`.
fn needed(bin: &Path) -> Vec<String> {
    run("readelf", &["-d", "--wide"], bin)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .map(|l| {
            l.split('[')
                .nth(1)
                .and_then(|r| r.split(']').next())
                .unwrap_or_else(|| panic!("readelf line {l}"))
                .to_owned()
        })
        .collect()
}

/// Every library the loader maps for the binary, with what it needs in turn, from `ldd`.
fn loaded(bin: &Path) -> Vec<String> {
    run("ldd", &[], bin)
        .lines()
        .map(|l| {
            assert!(!l.contains("not found"), "ldd: {l}");
            let first = l.split_whitespace().next().unwrap_or_default();
            Path::new(first)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn binary_links_only_what_distroless_cc_ships() {
    let bin = meshca_binary();
    let needed = needed(&bin);
    assert!(
        needed.iter().any(|l| l == "libc.so.6"),
        "a dynamically linked glibc binary names libc.so.6: {needed:?}"
    );
    let loaded = loaded(&bin);
    assert!(loaded.len() >= needed.len(), "ldd: {loaded:?}");
    let mut all: Vec<&String> = needed.iter().chain(&loaded).collect();
    all.sort();
    all.dedup();
    let missing: Vec<&&String> = all.iter().filter(|l| !provided(l)).collect();
    assert!(
        missing.is_empty(),
        "meshca links {missing:?}, which gcr.io/distroless/cc does not provide (all: {all:?})"
    );
    // The check bites on what a slip would bring in.
    for lib in [
        "libssl.so.3",
        "libcrypto.so.3",
        "libz.so.1",
        "libsqlite3.so.0",
    ] {
        assert!(!provided(lib), "{lib}");
    }
}

/// The newest `GLIBC_x.y` symbol version the binary requires, from `readelf -V`.
fn newest_glibc(bin: &Path) -> (u32, u32) {
    run("readelf", &["-V", "--wide"], bin)
        .split("GLIBC_")
        .skip(1)
        .filter_map(|rest| {
            let v: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let mut it = v.split('.').map(|n| n.parse::<u32>().ok());
            Some((it.next()??, it.next().flatten().unwrap_or(0)))
        })
        .max()
        .expect("the binary requires versioned glibc symbols")
}

#[test]
fn binary_asks_for_no_newer_glibc_than_the_runtime_has() {
    let (_, stages) = containerfile();
    let (debian, glibc) = runtime_debian(&stages.last().unwrap().image);
    let want = newest_glibc(&meshca_binary());
    assert!(
        want <= glibc,
        "meshca needs GLIBC_{}.{}, distroless Debian {debian} has {}.{}",
        want.0,
        want.1,
        glibc.0,
        glibc.1
    );
}

#[test]
fn containerfile_parser_reads_what_it_should() {
    let text = "# c\nARG V=1\nFROM rust:${V}-trixie AS b\nRUN a \\\n  --x \\\n  b\n\nFROM gcr.io/distroless/cc-debian13:nonroot\nCOPY --from=b /o /p\n";
    let (args, stages) = stages(&instructions(text));
    assert_eq!(args["V"], "1");
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0].image, "rust:1-trixie");
    assert_eq!(stages[0].name.as_deref(), Some("b"));
    assert_eq!(stages[0].body[0].args, "a --x b");
    assert_eq!(stages[1].body[0].keyword, "COPY");
    assert_eq!(builder_debian("rust:1-trixie").1, 13);
    assert_eq!(
        runtime_debian("gcr.io/distroless/cc-debian12:nonroot").1,
        (2, 36)
    );
}
