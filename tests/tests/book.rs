//! The book under `docs/` (mdBook) and the Markdown files at the repository root: what
//! `mdbook build` does not check by itself.
//!
//! - Every chapter `docs/src/SUMMARY.md` lists exists, and every `.md` under `docs/src` is listed
//!   (mdbook renders only listed chapters, so a link to an unlisted one is broken on the web).
//! - Every relative link and image resolves to a file; a link from a chapter stays inside
//!   `docs/src` (the rendered book holds nothing else) and reaches `.md` files that are chapters;
//!   every `#anchor` names a heading of its target, with mdbook's id rules (the heading's text,
//!   lower-cased, whitespace as `-`, every character but letters, digits, `-` and `_` dropped, a
//!   repeated id suffixed `-1`, `-2`, ...; an explicit `{#id}` wins). GitHub forms the anchors of
//!   the root files in the same way.
//! - `{{#include FILE}}` and `{{#include FILE:START:END}}` are expanded before links and headings
//!   are read, as mdbook does, and the included file must exist.
//! - Every chapter with a Rust code block (```` ```rust ````, attributes allowed) is a doc test of
//!   `meshca` (listed in `meshca/src/book.rs`), so its examples compile and run in `cargo test`.
//!   (A fence without a language is text to mdbook; `BENCHMARKS.md`, generated, has such fences.)
//!
//! The suite also builds the book with mdbook (`scripts/test`), which fails on a broken
//! `SUMMARY.md` or a missing chapter.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The Markdown files outside the book whose links are checked with the book's.
const ROOT_FILES: [&str; 7] = [
    "README.md",
    "CONTRIBUTING.md",
    "SECURITY.md",
    "CHANGELOG.md",
    "BENCHMARKS.md",
    "issuer-svc/README.md",
    "deploy/kubernetes/README.md",
];

#[test]
fn summary_lists_every_chapter_and_every_chapter_exists() {
    let book = Book::load(&repo_root()).expect("read docs/");
    let problems = book.summary_problems();
    assert!(
        problems.is_empty(),
        "docs/src/SUMMARY.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_link_and_anchor_resolves() {
    let root = repo_root();
    let book = Book::load(&root).expect("read docs/");
    let mut problems = book.link_problems();
    for name in ROOT_FILES {
        let path = root.join(name);
        if path.exists() {
            problems.extend(book.file_link_problems(&path));
        }
    }
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn chapters_with_rust_code_run_as_doc_tests() {
    let root = repo_root();
    let book = Book::load(&root).expect("read docs/");
    let listed = fs::read_to_string(root.join("meshca/src/book.rs")).expect("meshca/src/book.rs");
    let mut missing = Vec::new();
    for (rel, text) in &book.chapters {
        if has_rust_code(text) {
            let include = format!("include_str!(\"../../docs/src/{rel}\")");
            if !listed.contains(&include) {
                missing.push(format!(
                    "{rel}: has Rust code; add `#[doc = {include}]` to meshca/src/book.rs"
                ));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The checker itself finds what it is meant to: a book with one fault of each kind.
#[test]
fn a_broken_book_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let src = root.join("docs/src");
    fs::create_dir_all(src.join("part")).expect("mkdir");
    let write = |rel: &str, text: &str| fs::write(root.join(rel), text).expect("write");
    write(
        "docs/src/SUMMARY.md",
        "# Summary\n\n[Intro](intro.md)\n- [Part](part/one.md)\n- [Gone](gone.md)\n",
    );
    write(
        "docs/src/intro.md",
        "# Intro\n\n## Common-name `templates` (Kuma's)\n\nSee [one](part/one.md#the-part), \
         [here](#common-name-templates-kumas), [bad](part/one.md#nope), [nofile](two.md), \
         [out](../../README.md), `[code](ignored.md)`, [web](https://example.com/x.md).\n\n\
         ```\n[fenced](ignored.md)\n```\n\n{{#include ../../inc.md}}\n",
    );
    write(
        "docs/src/part/one.md",
        "# The part\n\n# The part\n\n## Custom {#my-id}\n\n[up](../intro.md#gone) \
         [dup](#the-part-1) [custom](#my-id) ![img](pic.svg)\n\n```rust,no_run\nfn main() {}\n```\n",
    );
    write("docs/src/orphan.md", "# Orphan\n");
    write("inc.md", "[included](part/nothing.md)\n");
    write(
        "README.md",
        "[book](docs/src/intro.md#intro) [bad](docs/src/intro.md#missing)\n",
    );

    let book = Book::load(root).expect("load");
    let summary = book.summary_problems();
    assert_eq!(
        summary,
        [
            "gone.md: listed in SUMMARY.md but missing",
            "orphan.md: not listed in SUMMARY.md",
        ]
    );
    let mut links = book.link_problems();
    links.extend(book.file_link_problems(&root.join("README.md")));
    assert_eq!(
        links,
        [
            "docs/src/intro.md: link part/one.md#nope: no heading with id `nope` in part/one.md",
            "docs/src/intro.md: link two.md: no such file",
            "docs/src/intro.md: link ../../README.md: leaves docs/src (the rendered book holds nothing else)",
            "docs/src/intro.md: link part/nothing.md: no such file",
            "docs/src/part/one.md: link ../intro.md#gone: no heading with id `gone` in ../intro.md",
            "docs/src/part/one.md: link pic.svg: no such file",
            "README.md: link docs/src/intro.md#missing: no heading with id `missing` in docs/src/intro.md",
        ]
    );
    assert!(has_rust_code(&book.chapters["part/one.md"]));
    assert!(!has_rust_code(&book.chapters["intro.md"]));
}

#[test]
fn heading_ids_follow_mdbook() {
    let ids = heading_ids(
        "# meshca\n\n## Quick start\n\n### `meshca serve`\n\n## Metrics (`/metrics`)\n\n\
         ## Example: paired nginx proxies (service A → KA → mTLS → KB → service B)\n\n\
         ## Quick start\n\n## [Linked](x.md) *emphasis* **strong**\n\n```sh\n# not a heading\n```\n\
         ## Trailing hashes ##\n",
    );
    let expected = [
        "meshca",
        "quick-start",
        "meshca-serve",
        "metrics-metrics",
        "example-paired-nginx-proxies-service-a--ka--mtls--kb--service-b",
        "quick-start-1",
        "linked-emphasis-strong",
        "trailing-hashes",
    ];
    assert_eq!(
        ids,
        expected
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
}

// === the checker ===

/// `docs/src` read once: the chapters (includes expanded) by path relative to `docs/src`, and
/// what SUMMARY.md lists.
struct Book {
    src: PathBuf,
    chapters: BTreeMap<String, String>,
    listed: Vec<String>,
    /// Problems met while reading (an include that cannot be read).
    read_problems: Vec<String>,
}

impl Book {
    fn load(root: &Path) -> std::io::Result<Book> {
        let src = root.join("docs/src");
        let summary = fs::read_to_string(src.join("SUMMARY.md"))?;
        let listed = summary_links(&summary);
        let mut chapters = BTreeMap::new();
        let mut read_problems = Vec::new();
        for path in markdown_files(&src)? {
            let rel = relative(&src, &path);
            if rel == "SUMMARY.md" {
                continue;
            }
            let raw = fs::read_to_string(&path)?;
            let text = expand_includes(&raw, path.parent().unwrap_or(&src), &mut |p| {
                read_problems.push(format!("docs/src/{rel}: {p}"))
            });
            chapters.insert(rel, text);
        }
        Ok(Book {
            src,
            chapters,
            listed,
            read_problems,
        })
    }

    fn summary_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let listed: BTreeSet<&str> = self.listed.iter().map(String::as_str).collect();
        for rel in &self.listed {
            if !self.chapters.contains_key(rel) {
                problems.push(format!("{rel}: listed in SUMMARY.md but missing"));
            }
        }
        for rel in self.chapters.keys() {
            if !listed.contains(rel.as_str()) {
                problems.push(format!("{rel}: not listed in SUMMARY.md"));
            }
        }
        problems
    }

    /// The broken links of every chapter (and SUMMARY.md's own are checked by mdbook).
    fn link_problems(&self) -> Vec<String> {
        let mut problems = self.read_problems.clone();
        for (rel, text) in &self.chapters {
            let here = self.src.join(rel);
            for dest in links(text) {
                if let Some(problem) = self.check_link(&here, &dest, true) {
                    problems.push(format!("docs/src/{rel}: link {dest}: {problem}"));
                }
            }
        }
        problems
    }

    /// The broken links of a Markdown file outside the book (the root files).
    fn file_link_problems(&self, path: &Path) -> Vec<String> {
        let Ok(text) = fs::read_to_string(path) else {
            return vec![format!("{}: cannot be read", path.display())];
        };
        let shown = path
            .strip_prefix(
                self.src
                    .parent()
                    .and_then(Path::parent)
                    .unwrap_or(Path::new("")),
            )
            .unwrap_or(path)
            .display()
            .to_string();
        links(&text)
            .into_iter()
            .filter_map(|dest| {
                self.check_link(path, &dest, false)
                    .map(|problem| format!("{shown}: link {dest}: {problem}"))
            })
            .collect()
    }

    /// What is wrong with `dest`, a link in the file `from`; `None` when it resolves.
    fn check_link(&self, from: &Path, dest: &str, in_book: bool) -> Option<String> {
        if dest.contains("://") || dest.starts_with("mailto:") {
            return None; // not checked: the suite has no network
        }
        let (path, anchor) = match dest.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (dest, None),
        };
        let target = if path.is_empty() {
            from.to_path_buf()
        } else {
            normalize(&from.parent().unwrap_or(Path::new("")).join(path))
        };
        if in_book && !target.starts_with(&self.src) {
            return Some("leaves docs/src (the rendered book holds nothing else)".to_string());
        }
        if !target.exists() {
            return Some("no such file".to_string());
        }
        let is_md = target.extension().is_some_and(|e| e == "md");
        if in_book && is_md && !path.is_empty() {
            let rel = relative(&self.src, &target);
            if !self.listed.contains(&rel) {
                return Some(format!("{rel} is not a chapter in SUMMARY.md"));
            }
        }
        let anchor = anchor?;
        if !is_md {
            return Some("an anchor into a file that is not Markdown".to_string());
        }
        let text = if target.starts_with(&self.src) {
            self.chapters.get(&relative(&self.src, &target)).cloned()
        } else {
            fs::read_to_string(&target).ok()
        }
        .unwrap_or_default();
        if heading_ids(&text).contains(anchor) {
            None
        } else {
            let shown = if path.is_empty() { "this file" } else { path };
            Some(format!("no heading with id `{anchor}` in {shown}"))
        }
    }
}

fn repo_root() -> PathBuf {
    // tests/ is a directory of the repository.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Every `.md` file under `dir`, sorted.
fn markdown_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `path` relative to `base`, with `/` separators.
fn relative(base: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// `..` and `.` resolved lexically (a symlink in the book, such as `benchmarks.svg`, stays one).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The chapter paths of SUMMARY.md, in order.
fn summary_links(summary: &str) -> Vec<String> {
    links(summary)
        .into_iter()
        .filter(|d| !d.is_empty())
        .map(|d| d.split('#').next().unwrap_or_default().to_string())
        .collect()
}

/// `text` with mdbook's `{{#include FILE}}` / `{{#include FILE:START:END}}` replaced by the lines
/// they name (1-based, END inclusive, either may be empty), relative to `dir`.
fn expand_includes(text: &str, dir: &Path, problem: &mut dyn FnMut(String)) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{#include ") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{{#include ".len()..];
        let Some(end) = after.find("}}") else {
            problem("an {{#include without }}".to_string());
            return out;
        };
        let spec = after[..end].trim();
        rest = &after[end + 2..];
        let mut parts = spec.split(':');
        let file = parts.next().unwrap_or_default();
        let bound = |s: Option<&str>| -> Result<Option<usize>, String> {
            match s {
                None | Some("") => Ok(None),
                Some(n) => n.parse().map(Some).map_err(|_| {
                    format!("{{{{#include {spec}}}}}: only line numbers are supported")
                }),
            }
        };
        let (from, to) = match (bound(parts.next()), bound(parts.next())) {
            (Ok(a), Ok(b)) => (a.unwrap_or(1), b),
            (Err(e), _) | (_, Err(e)) => {
                problem(e);
                continue;
            }
        };
        match fs::read_to_string(dir.join(file)) {
            Ok(included) => {
                let lines: Vec<&str> = included.lines().collect();
                let to = to.unwrap_or(lines.len()).min(lines.len());
                if from >= 1 && from <= to {
                    out.push_str(&lines[from - 1..to].join("\n"));
                }
            }
            Err(e) => problem(format!("{{{{#include {spec}}}}}: {e}")),
        }
    }
    out.push_str(rest);
    out
}

/// The lines of `text` outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fence: Option<char> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        match fence {
            // A closing fence is the opening character repeated, and nothing else.
            Some(c) => {
                if trimmed.starts_with(c) && trimmed.trim_start_matches(c).trim().is_empty() {
                    fence = None;
                }
            }
            None if trimmed.starts_with("```") => fence = Some('`'),
            None if trimmed.starts_with("~~~") => fence = Some('~'),
            None => out.push(line),
        }
    }
    out
}

/// `line` without its inline code spans.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + ticks..];
        match after.find(&"`".repeat(ticks)) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                out.push_str(&rest[start..]);
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The destinations of the inline links and images `[..](dest)` and of the link reference
/// definitions `[..]: dest` in `text`, outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose_lines(text) {
        let line = without_code_spans(line);
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if let Some(pos) = trimmed.find("]: ") {
                let dest = trimmed[pos + 3..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default();
                out.push(dest.trim_matches(['<', '>']).to_string());
                continue;
            }
        }
        let mut rest = line.as_str();
        while let Some(pos) = rest.find("](") {
            let after = &rest[pos + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let dest = after[..end].split_whitespace().next().unwrap_or_default();
            out.push(dest.trim_matches(['<', '>']).to_string());
            rest = &after[end..];
        }
    }
    out
}

/// The ids mdbook gives the headings of `text` (ATX headings outside code blocks).
fn heading_ids(text: &str) -> BTreeSet<String> {
    let mut used = HashSet::new();
    let mut ids = BTreeSet::new();
    for line in prose_lines(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with([' ', '\t']) {
            continue;
        }
        let mut content = line[hashes..]
            .trim()
            .trim_end_matches('#')
            .trim_end()
            .to_string();
        let explicit = match (content.rfind("{#"), content.ends_with('}')) {
            (Some(open), true) => {
                let id = content[open + 2..content.len() - 1].to_string();
                content.truncate(open);
                Some(id)
            }
            _ => None,
        };
        let id = explicit.unwrap_or_else(|| id_from_content(&heading_text(&content)));
        let mut unique = id.clone();
        let mut n = 0;
        while !used.insert(unique.clone()) {
            n += 1;
            unique = format!("{id}-{n}");
        }
        ids.insert(unique);
    }
    ids
}

/// The text of a heading's Markdown: links by their text, code and emphasis marks dropped.
fn heading_text(markdown: &str) -> String {
    let mut out = String::new();
    let mut rest = markdown;
    // [text](dest) -> text
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match (after.find("]("), after.find(')')) {
            (Some(close), Some(end)) if close < end => {
                out.push_str(&after[..close]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace(['`', '*'], "")
}

/// mdbook's `id_from_content`: trimmed, lower-cased, whitespace as `-`, only alphanumerics,
/// `-` and `_` kept.
fn id_from_content(content: &str) -> String {
    content
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c)
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// Whether `text` has a Rust code block: ```` ```rust ```` or ```` ```rust,no_run ```` and the like.
fn has_rust_code(text: &str) -> bool {
    let mut in_fence = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            if in_fence {
                in_fence = false;
                continue;
            }
            in_fence = true;
            let lang = info.split([',', ' ']).next().unwrap_or_default().trim();
            if lang == "rust" {
                return true;
            }
        }
    }
    false
}
