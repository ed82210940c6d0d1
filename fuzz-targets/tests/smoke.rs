//! The fuzz targets' smoke run, part of `cargo test`: for each target, every file of
//! `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/`, then a fixed number of inputs
//! mutated from them (bit flips, byte changes, inserts, deletes, truncations, splices of two
//! seeds, tokens of the formats) by a seeded xorshift generator, so every run tries the same
//! inputs. `MESHCA_FUZZ_SMOKE_ITERS` sets the number of mutations per target (default
//! [`DEFAULT_ITERS`]). A panic fails the test once the target's run is over, which reports
//! each distinct place that panicked with the first input that got there, written to
//! `target/tmp/fuzz-smoke/<target>-<hash>` (copy it to `fuzz/regressions/<target>/`).
//!
//! The long runs are libFuzzer's, with `scripts/fuzz`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::{Cell, RefCell};
use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Instant;

use meshca_fuzz_targets::{target, TARGETS};

/// Mutated inputs per target when `MESHCA_FUZZ_SMOKE_ITERS` is not set.
const DEFAULT_ITERS: usize = 50_000;

/// Pieces of the formats the targets read, inserted by the mutator.
const TOKENS: &[&[u8]] = &[
    b"{{",
    b"}}",
    b"<<",
    b">>",
    b"\"",
    b"|",
    b" tag \"kuma.io/service\" ",
    b" replace \"a\" \"b\" ",
    b"lower",
    b"trimPrefix",
    b"\\",
    "\u{e9}".as_bytes(),
    "\u{1f600}".as_bytes(),
    b"\n",
    b": ",
    b"- ",
    b"  ",
    b"[",
    b"]",
    b"{",
    b"}",
    b"&a ",
    b"*a",
    b"!!binary ",
    b"---\n",
    b"\"data\"",
    b"null",
    b"0",
    b"-1",
    b"18446744073709551616",
    b"1e999",
    b"\\u0000",
    b"\\ud800",
    b"-----BEGIN CERTIFICATE-----\n",
    b"-----END CERTIFICATE-----\n",
    b"-----BEGIN PRIVATE KEY-----\n",
    b"=",
    b"\xff",
    b"\xfe",
    b"\x00",
    b"\x30\x82\xff\xff",
    b"\x30\x80",
    b"\x06\x03\x55\x1d\x11",
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir` (sorted; READMEs left out), with their names.
fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("README")
        })
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), data)
        })
        .collect();
    out.sort();
    out
}

/// xorshift64*: small, fast and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }
}

/// One to four mutations of a seed.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(10) {
            0 | 1 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = [0, 0x7f, 0x80, 0xff, rng.byte()][rng.below(5)];
            }
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                data.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                data.drain(at..at + n);
            }
            5 => data.truncate(rng.below(len + 1)),
            6 => {
                // Splice: a prefix of this one, a suffix of another.
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            7 if len > 0 => {
                // Repeat a chunk.
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(32));
                let chunk = data[at..at + n].to_vec();
                let to = rng.below(len + 1);
                data.splice(to..to, chunk);
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(len + 1);
                if rng.below(2) == 0 || at == len {
                    data.splice(at..at, token.iter().copied());
                } else {
                    let end = (at + token.len()).min(len);
                    data.splice(at..end, token.iter().copied());
                }
            }
        }
    }
    data.truncate(65_536);
    data
}

thread_local! {
    /// Set while a target runs on this thread: its panics are recorded, not printed.
    static IN_TARGET: Cell<bool> = const { Cell::new(false) };
    /// Where and why the last target panic on this thread happened.
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that records a target's panic quietly, so that the run goes on
/// and reports each distinct panic once; other panics go to the default hook.
fn quiet_target_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_TARGET.with(Cell::get) {
                return default(info);
            }
            let location = info
                .location()
                .map_or_else(|| "?".to_owned(), |l| format!("{}:{}", l.file(), l.line()));
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some((location, message)));
        }));
    });
}

/// Runs `f` on `input`: `None`, or where and why it panicked.
fn run(f: fn(&[u8]), input: &[u8]) -> Option<(String, String)> {
    IN_TARGET.with(|t| t.set(true));
    let outcome = catch_unwind(AssertUnwindSafe(|| f(input)));
    IN_TARGET.with(|t| t.set(false));
    match outcome {
        Ok(()) => None,
        Err(_) => Some(
            LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_default(),
        ),
    }
}

/// Distinct panics of one target, by location: the first input kept, and how many hit it.
#[derive(Default)]
struct Crashes(BTreeMap<String, (String, String, PathBuf, usize)>);

impl Crashes {
    fn note(
        &mut self,
        name: &str,
        what: &str,
        input: &[u8],
        (location, message): (String, String),
    ) {
        if let Some(seen) = self.0.get_mut(&location) {
            seen.3 += 1;
            return;
        }
        let mut h = DefaultHasher::new();
        input.hash(&mut h);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-smoke");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}-{:016x}", h.finish()));
        std::fs::write(&path, input).unwrap();
        eprintln!("fuzz target `{name}` panicked on {what} at {location}: {message}");
        self.0.insert(location, (what.to_owned(), message, path, 1));
    }

    fn check(self, name: &str) {
        if self.0.is_empty() {
            return;
        }
        let report: Vec<String> = self
            .0
            .iter()
            .map(|(location, (what, message, path, n))| {
                format!(
                    "  {location}: {message}\n    {n} input(s), the first ({what}) kept as {}",
                    path.display()
                )
            })
            .collect();
        panic!(
            "fuzz target `{name}` panicked at {} place(s); copy each kept input to \
             fuzz/regressions/{name}/ and fix the panic:\n{}",
            report.len(),
            report.join("\n")
        );
    }
}

fn smoke(name: &str) {
    quiet_target_panics();
    let f = target(name).unwrap();
    let started = Instant::now();
    let seeds = inputs(&fuzz_dir().join("seeds").join(name));
    assert!(!seeds.is_empty(), "fuzz/seeds/{name}/ has no seed");
    let regressions = inputs(&fuzz_dir().join("regressions").join(name));
    let mut crashes = Crashes::default();
    for (kind, files) in [("seed", &seeds), ("regression", &regressions)] {
        for (file, data) in files {
            if let Some(p) = run(f, data) {
                crashes.note(name, &format!("{kind} {file}"), data, p);
            }
        }
    }
    let iters = std::env::var("MESHCA_FUZZ_SMOKE_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERS);
    let corpus: Vec<Vec<u8>> = seeds.into_iter().map(|(_, d)| d).collect();
    // One fixed stream per target: seeded with the FNV-1a hash of its name.
    let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut rng = Rng(seed | 1);
    for i in 0..iters {
        let input = mutate(&mut rng, &corpus);
        if let Some(p) = run(f, &input) {
            crashes.note(name, &format!("mutation {i}"), &input, p);
        }
    }
    eprintln!(
        "fuzz smoke {name}: {} seeds, {} regressions, {iters} mutations in {:.1?}",
        corpus.len(),
        regressions.len(),
        started.elapsed()
    );
    crashes.check(name);
}

#[test]
fn csr() {
    smoke("csr");
}

#[test]
fn template() {
    smoke("template");
}

#[test]
fn mesh_yaml() {
    smoke("mesh_yaml");
}

#[test]
fn data_source() {
    smoke("data_source");
}

#[test]
fn vault_response() {
    smoke("vault_response");
}

#[test]
fn acmpca_chain() {
    smoke("acmpca_chain");
}

#[test]
fn certmanager_status() {
    smoke("certmanager_status");
}

/// Each target has its seeds, its regressions folder and its libFuzzer entry point, and each
/// libFuzzer entry point is a target.
#[test]
fn every_target_is_wired() {
    let dir = fuzz_dir();
    for (name, _) in TARGETS {
        assert!(dir.join("seeds").join(name).is_dir(), "fuzz/seeds/{name}");
        assert!(
            dir.join("regressions")
                .join(name)
                .join("README.md")
                .is_file(),
            "fuzz/regressions/{name}/README.md"
        );
        let entry = std::fs::read_to_string(dir.join("fuzz_targets").join(format!("{name}.rs")))
            .unwrap_or_else(|e| panic!("fuzz/fuzz_targets/{name}.rs: {e}"));
        assert!(
            entry.contains(&format!("meshca_fuzz_targets::{name}(data)")),
            "fuzz/fuzz_targets/{name}.rs does not call meshca_fuzz_targets::{name}"
        );
        assert!(
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .unwrap()
                .contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
    for entry in std::fs::read_dir(dir.join("fuzz_targets")).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        let name = file.trim_end_matches(".rs");
        assert!(
            target(name).is_some(),
            "fuzz/fuzz_targets/{file} is no target"
        );
    }
}
