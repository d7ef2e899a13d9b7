//! The guide keeps its promises: README.md stays short, every relative link in it
//! and in docs/ leads to a file (and a heading, when it names one), its capture is
//! a screen the snapshot tests draw today, and `scripts/run.sh` says when it builds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every Markdown file in docs/.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, root().join("README.md"));
    docs
}

/// The text outside fenced code blocks and inline code spans.
fn prose(markdown: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            // Inline code: every other piece between backticks.
            out.extend(line.split('`').step_by(2).flat_map(|piece| [piece, " "]));
            out.push('\n');
        }
    }
    out
}

/// The targets of `[text](target)` links in the prose.
fn links(markdown: &str) -> Vec<String> {
    let text = prose(markdown);
    text.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &text[at + 2..];
            rest.find(')').map(|end| rest[..end].trim().to_string())
        })
        .collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as '-'.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every heading's anchor in a Markdown file (repeated headings get -1, -2 …).
fn anchors(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let base = slug(line.trim_start_matches('#'));
        let count = seen.entry(base.clone()).or_insert(0);
        out.push(if *count == 0 { base } else { format!("{base}-{count}") });
        *count += 1;
    }
    out
}

/// What is wrong with one link of the file `from`, if anything.
fn broken(from: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (file, anchor) = target.split_once('#').map_or((target, None), |(f, a)| (f, Some(a)));
    let path = if file.is_empty() { from.to_path_buf() } else { from.parent().expect("a folder").join(file) };
    if !path.exists() {
        return Some(format!("{target}: no file {}", path.display()));
    }
    let anchor = anchor?;
    let text = fs::read_to_string(&path).ok()?;
    (!anchors(&text).iter().any(|a| a == anchor))
        .then(|| format!("{target}: no heading #{anchor} in {}", path.display()))
}

#[test]
fn the_link_reader_finds_prose_links_and_github_anchors() {
    let md = "See [a](x.md#y-z) and `[code](not.md)`.\n```\n[fenced](no.md)\n```\n![pic](images/p.png)\n";
    assert_eq!(links(md), ["x.md#y-z", "images/p.png"]);
    assert_eq!(slug(" `bench` of 2026-12-05, evening (before X)"), "bench-of-2026-12-05-evening-before-x");
    assert_eq!(anchors("# A\n## Keys\n```\n# not\n```\n## Keys-x\n## Keys\n"), ["a", "keys", "keys-x", "keys-1"]);
    let readme = root().join("README.md");
    assert!(broken(&readme, "docs/explorer.md#keys").is_none());
    assert!(broken(&readme, "docs/nowhere.md").is_some_and(|why| why.contains("no file")));
    assert!(broken(&readme, "docs/explorer.md#no-such-heading").is_some_and(|why| why.contains("no heading")));
    assert!(broken(&readme, "https://no-color.org").is_none());
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = fs::read_to_string(&doc).expect("a Markdown file");
        let fences = text.lines().filter(|l| l.trim_start().starts_with("```")).count();
        if fences % 2 == 1 {
            problems.push(format!("{}: an unclosed ``` block hides the links after it", doc.display()));
        }
        for target in links(&text) {
            checked += 1;
            if let Some(why) = broken(&doc, &target) {
                problems.push(format!("{}: {why}", doc.strip_prefix(root()).unwrap_or(&doc).display()));
            }
        }
    }
    assert!(checked > 20, "only {checked} links found: the reader is broken");
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
}

#[test]
fn the_readme_is_a_guide_of_at_most_250_lines() {
    let readme = fs::read_to_string(root().join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 250, "README.md has {lines} lines; move detail into docs/");
    for promise in ["scripts/run.sh", "scripts/test.sh", "TROJANSCOPE_CPU_PATH"] {
        assert!(readme.contains(promise), "README.md no longer mentions {promise}");
    }
}

/// The body of an insta snapshot (what follows its `---` header).
fn snapshot_body(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("---\n")?;
    rest.split_once("\n---\n").map(|(_, body)| body)
}

#[test]
fn the_readmes_capture_is_a_screen_the_snapshot_tests_draw() {
    let readme = fs::read_to_string(root().join("README.md")).expect("README.md");
    let (_, after) = readme.split_once("```text\n").expect("a ```text capture in README.md");
    let capture = &after[..after.find("```\n").expect("the capture's end")];
    let snapshots = fs::read_dir(root().join("tests/snapshots")).expect("tests/snapshots");
    let matches: Vec<String> = snapshots
        .map(|e| e.expect("a snapshot").path())
        .filter(|p| fs::read_to_string(p).is_ok_and(|t| snapshot_body(&t) == Some(capture)))
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        !matches.is_empty(),
        "README.md's capture is no snapshot's screen: copy the current one from tests/snapshots/ (without insta's header)"
    );
}

/// A copy of scripts/run.sh in a folder of its own, with a stub setup.sh and a
/// `cargo` that records its arguments and writes the binary.
struct FakeTree {
    dir: PathBuf,
}

impl FakeTree {
    fn new() -> FakeTree {
        let dir = std::env::temp_dir().join(format!("trojanscope-run-sh-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["scripts", "src", "bin"] {
            fs::create_dir_all(dir.join(sub)).expect("a folder");
        }
        fs::copy(root().join("scripts/run.sh"), dir.join("scripts/run.sh")).expect("run.sh");
        fs::write(dir.join("scripts/setup.sh"), "say() { printf '[setup] %s\\n' \"$*\" >&2; }\n").expect("setup.sh");
        for name in ["src/main.rs", "build.rs", "Cargo.toml", "Cargo.lock"] {
            fs::write(dir.join(name), "").expect("a source");
        }
        let cargo = "#!/usr/bin/env bash\n\
                     echo \"$*\" >> cargo-calls\n\
                     mkdir -p target/release\n\
                     printf '#!/usr/bin/env bash\\necho \"trojanscope $*\"\\n' > target/release/trojanscope\n\
                     chmod +x target/release/trojanscope\n";
        fs::write(dir.join("bin/cargo"), cargo).expect("cargo");
        Command::new("chmod").args(["+x", "bin/cargo"]).current_dir(&dir).status().expect("chmod");
        FakeTree { dir }
    }

    fn age(&self, name: &str, when: SystemTime) {
        let file = fs::File::options().write(true).open(self.dir.join(name)).expect("a file");
        file.set_modified(when).expect("set its time");
    }

    /// (stderr, the arguments cargo got this time, stdout)
    fn run(&self) -> (String, String, String) {
        let _ = fs::remove_file(self.dir.join("cargo-calls"));
        let path = format!("{}:{}", self.dir.join("bin").display(), std::env::var("PATH").unwrap_or_default());
        let out = Command::new("bash")
            .args(["scripts/run.sh", "doctor"])
            .current_dir(&self.dir)
            .env("PATH", path)
            .output()
            .expect("bash");
        assert!(out.status.success(), "run.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        let calls = fs::read_to_string(self.dir.join("cargo-calls")).expect("cargo was called");
        (
            String::from_utf8_lossy(&out.stderr).into_owned(),
            calls.trim().to_string(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    }
}

impl Drop for FakeTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn run_sh_says_when_it_builds_and_shows_cargos_progress() {
    let tree = FakeTree::new();
    let past = SystemTime::now() - Duration::from_secs(3600);
    for name in ["src/main.rs", "build.rs", "Cargo.toml", "Cargo.lock"] {
        tree.age(name, past);
    }

    let (stderr, cargo, stdout) = tree.run();
    assert!(stderr.contains("[setup] building trojanscope (first build about"), "no binary yet: {stderr:?}");
    assert_eq!(cargo, "build --release", "cargo shows its progress");
    assert_eq!(stdout, "trojanscope doctor", "the arguments reach the binary");

    let (stderr, cargo, _) = tree.run();
    assert!(!stderr.contains("[setup]"), "no note for a binary newer than its sources: {stderr:?}");
    assert_eq!(cargo, "build --release", "cargo still decides, and shows its progress if it builds");

    tree.age("src/main.rs", SystemTime::now() + Duration::from_secs(60));
    let (stderr, cargo, _) = tree.run();
    assert!(stderr.contains("[setup] rebuilding trojanscope"), "a source newer than the binary: {stderr:?}");
    assert_eq!(cargo, "build --release");
}
