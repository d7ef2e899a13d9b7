//! One meaning per word, and nothing cut off: every pane of the committed tiny
//! run, and of the same run imported as a graph, at 80×24, 120×40 and 160×48.
//! A word is cut when it ends at a box's right edge (or the screen's) and is a
//! strict beginning of a word the same state shows whole on a 400-column screen
//! with that pane zoomed, without being such a word itself ("· chec" of
//! "checkpoints", "z zooms thi" of "this"); a word shortened on purpose ends
//! with "…". Every abbreviation a pane draws has its entry in the one table of
//! words (`tui::words::TERMS`) that the hint line and `?` read.

mod tui_support;

use ratatui::crossterm::event::KeyCode;
use std::collections::BTreeSet;
use std::path::Path;
use trojanscope::tui::panes::Pane;
use trojanscope::tui::words;
use tui_support::shared::binary;
use tui_support::{Harness, data_dir, scratch};

const SIZES: [(u16, u16); 3] = [(80, 24), (120, 40), (160, 48)];
/// A box's right edge: a word that ends right before one may have been cut.
const RIGHT_EDGES: [char; 5] = ['│', '┐', '┘', '┤', '─'];

/// The words of a line: text between spaces and box borders, without the
/// punctuation around them; each with whether it ends at an edge.
fn words_of(line: &str, width: usize) -> Vec<(String, bool)> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut start = None;
    for i in 0..=chars.len() {
        let boundary = i == chars.len() || chars[i].is_whitespace() || "│┌┐└┘─├┤".contains(chars[i]);
        match (start, boundary) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                let at_edge = (i == chars.len() && i == width) || chars.get(i).is_some_and(|c| RIGHT_EDGES.contains(c));
                let word: String = chars[s..i].iter().collect();
                let word = word.trim_matches(|c: char| "()[],;:·".contains(c)).to_string();
                if !word.is_empty() {
                    out.push((word, at_edge));
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Every word `h`'s state shows with each pane zoomed on a 400×120 screen, and
/// on both pages of its help.
fn whole_words(h: &mut Harness) -> BTreeSet<String> {
    let (focus, zoomed) = (h.app.focus, h.app.zoomed);
    let mut whole = BTreeSet::new();
    for pane in Pane::ALL {
        h.app.focus = pane;
        h.app.zoomed = true;
        for (help, words) in [(false, false), (true, false), (true, true)] {
            (h.app.help, h.app.help_words) = (help, words);
            let screen = h.screen(400, 120);
            whole.extend(screen.lines().flat_map(|l| words_of(l, 400)).map(|(w, _)| w));
        }
    }
    (h.app.help, h.app.help_words) = (false, false);
    (h.app.focus, h.app.zoomed) = (focus, zoomed);
    whole
}

/// The cut words of `screen`: each with its line.
fn cut_words(screen: &str, width: usize, whole: &BTreeSet<String>) -> Vec<String> {
    let mut cut = Vec::new();
    for line in screen.lines() {
        for (word, at_edge) in words_of(line, width) {
            let fragment = at_edge
                && !word.ends_with('…')
                && word.chars().any(char::is_alphanumeric)
                && !whole.contains(&word)
                && whole.iter().any(|w| w.len() > word.len() && w.starts_with(&word));
            if fragment {
                cut.push(format!("{word:?} in {line:?}"));
            }
        }
    }
    cut
}

/// The help's box, cut out of the screen it covers: its lines and width.
fn overlay(screen: &str) -> (String, usize) {
    let lines: Vec<Vec<char>> = screen.lines().map(|l| l.chars().collect()).collect();
    let titled = |l: &&Vec<char>| {
        let text: String = l.iter().collect();
        text.contains("┌ Keys —") || text.contains("┌ Words on screen")
    };
    let top = lines.iter().position(|l| titled(&l)).expect("the help is on screen");
    let left = lines[top].iter().position(|&c| c == '┌').unwrap();
    let right = left + lines[top][left..].iter().position(|&c| c == '┐').unwrap();
    let boxed: Vec<String> = lines[top..]
        .iter()
        .take_while(|l| l.get(left) != Some(&'└'))
        .map(|l| l.get(left..=right.min(l.len().saturating_sub(1))).unwrap_or_default().iter().collect())
        .collect();
    (boxed.join("\n"), right - left + 1)
}

/// Each pane focused at each size, and the help's two pages (keys, words) over
/// the last: no cut word anywhere on screen.
fn nothing_cut(h: &mut Harness, run: &str) -> usize {
    let whole = whole_words(h);
    let mut screens = 0;
    let mut cut = Vec::new();
    for (width, height) in SIZES {
        for key in Pane::ALL.map(|p| char::from_digit(p.number() as u32, 10).unwrap()).into_iter().chain(['?', '?']) {
            h.press(KeyCode::Char(key));
            let screen = h.screen(width, height);
            // Over the panes, the help's box is what is read.
            let (screen, width) = if h.app.help { overlay(&screen) } else { (screen, width as usize) };
            cut.extend(cut_words(&screen, width, &whole).into_iter().map(|c| format!("{width}×{height} {c}")));
            screens += 1;
        }
        h.press(KeyCode::Char('?'));
        assert!(!h.app.help, "a third ? closes the help");
    }
    assert!(cut.is_empty(), "cut words on the {run}:\n{}", cut.join("\n"));
    screens
}

/// Words that abbreviate: with a symbol (Δ, ¬, ‖, ±, λ, ✗, +T), two capitals
/// (ASR, DER, TAC), or one of the short forms the panes use.
fn is_abbreviation(word: &str) -> bool {
    let capitals = word.chars().filter(char::is_ascii_uppercase).count();
    let symbol = word.chars().any(|c| "Δ¬‖±λ✗".contains(c)) || word == "+T";
    symbol
        || (capitals >= 2 && word.chars().all(|c| c.is_alphanumeric() || c == '¬'))
        || ["abl", "anom.", "succ%", "ms", "L1"].contains(&word)
}

/// The abbreviations on `screen` that no entry of the table explains.
fn unexplained(screen: &str, target: &str) -> (usize, Vec<String>) {
    let explained: BTreeSet<String> =
        words::TERMS.iter().flat_map(|t| t.shown(target).split(' ').map(String::from).collect::<Vec<_>>()).collect();
    let found: BTreeSet<String> = screen
        .lines()
        .flat_map(|l| words_of(l, usize::MAX))
        .map(|(w, _)| w.trim_end_matches(['↑', '↓', '…']).to_string())
        .filter(|w| is_abbreviation(w))
        .collect();
    // A scale's end (±0.019) and an arrow-sorted column are the word with a value.
    let covered = |w: &String| explained.contains(w) || explained.iter().any(|e| e == "±" && w.starts_with('±'));
    (found.len(), found.iter().filter(|w| !covered(w)).cloned().collect())
}

/// The tiny run with conv1 unit 0 ablated and conv1 swept.
fn study() -> Harness {
    let mut h = Harness::ready((160, 48));
    h.type_keys(" w");
    h.wait_for("the ablation and the sweep", |app| {
        app.study.ablation.result.is_some() && app.study.ablation.sweeps.len() == 1
    });
    h
}

/// The tiny run's clean and poisoned models imported as a graph (the study's
/// CNN as a preset), opened, its first convolution's unit 0 ablated and swept.
fn graph(checkpoints: &Path) -> Harness {
    for model in ["clean", "poisoned"] {
        let weights = tui_support::fixture().join(format!("{model}.safetensors")).display().to_string();
        let mut import = binary();
        import.args(["--checkpoints", &checkpoints.display().to_string(), "--run", "g", "--test-limit", "300"]);
        let out = import.args(["import", "--preset", "study", &weights, "--model", model]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let (dir, data) = (checkpoints.display().to_string(), data_dir().display().to_string());
    let argv = ["trojanscope", "--checkpoints", &dir, "--run", "g", "--data-dir", &data, "--threads", "1"];
    let tail = ["--test-limit", "300", "--device", "cpu"];
    let common = <trojanscope::cli::args::Cli as clap::Parser>::parse_from(argv.iter().chain(&tail)).common;
    let mut h = Harness::open(common, (160, 48));
    h.wait_for("the graph run", |app| app.study.ready && app.study.graph.is_some() && app.study.base.is_some());
    h.type_keys("2 w");
    h.wait_for("the graph's ablation and sweep", |app| {
        app.study.graph.as_deref().is_some_and(|g| g.result.as_ref().is_some_and(|r| !r.sample) && !g.sweeps.is_empty())
    });
    h
}

#[test]
fn no_word_is_cut_at_80x24_120x40_and_160x48_on_a_study_and_a_graph_run() {
    let mut h = study();
    assert_eq!(nothing_cut(&mut h, "study run"), 30);
    drop(h);
    let checkpoints = scratch("words-graph");
    let mut g = graph(&checkpoints);
    assert_eq!(nothing_cut(&mut g, "graph run"), 30);
}

#[test]
fn every_abbreviation_on_screen_is_in_the_table_the_hint_and_help_read() {
    let mut h = study();
    let target = h.app.study.target_label();
    assert_eq!(target, "8");
    let mut seen = 0;
    for pane in Pane::ALL {
        h.press(KeyCode::Char(char::from_digit(pane.number() as u32, 10).unwrap()));
        let (found, missing) = unexplained(&h.screen(160, 48), &target);
        assert!(missing.is_empty(), "{} pane: {missing:?} are not in tui::words::TERMS", pane.title());
        seen = seen.max(found);
    }
    assert!(seen >= 12, "only {seen} abbreviations found: the detector is broken");
    // The hint line explains the focused pane's words.
    h.press(KeyCode::Char('5'));
    let screen = h.screen(160, 48);
    let hint = screen.lines().nth(46).unwrap();
    assert!(hint.starts_with("Ablation: ") && hint.contains("ASR¬8 = attack success rate"), "{hint}");
    // `?` twice: the words on screen, the focused pane's first, each with its meaning.
    h.type_keys("??");
    let screen = h.screen(80, 24);
    for term in words::of(Pane::Ablation) {
        let shown = format!("{:<11}{}", term.shown(&target), term.meaning(&target));
        let first = &shown[..shown.char_indices().nth(40).map_or(shown.len(), |(i, _)| i)];
        assert!(screen.contains(first), "{first:?} not in the help:\n{screen}");
    }
    h.press(KeyCode::Char('?'));
    assert!(!h.app.help, "a third ? closes the help");
}

/// Space in Channels at 80×24: the set's result on a line of that pane, with
/// the numbers the Ablation pane shows.
#[test]
fn space_in_channels_shows_the_result_in_the_pane_at_80x24() {
    let mut h = Harness::ready((80, 24));
    h.type_keys("2 ");
    h.wait_for("the ablation", |app| app.study.ablation.result.is_some());
    let ablated = h.app.study.ablation.result.as_ref().unwrap().metrics.clone();
    let before = h.app.study.base.as_ref().unwrap().get(h.app.study.subject).unwrap().clone();
    let screen = h.screen(80, 24);
    let line = screen.lines().nth(4).unwrap();
    let expected = format!(
        "│set conv1:0: clean {:.1} % {:+.1} · poison {:.1} % {:+.1} · ASR¬8 {:.1} % {:+.1}",
        ablated.clean_acc,
        ablated.clean_acc - before.clean_acc,
        ablated.poison_acc,
        ablated.poison_acc - before.poison_acc,
        ablated.asr_non_target,
        ablated.asr_non_target - before.asr_non_target
    );
    assert!(line.starts_with(&expected), "{line}\n{expected}");
    assert_eq!(h.app.focus, Pane::Channels);
}

#[test]
fn the_word_detector_finds_the_cuts_a_user_found() {
    let whole: BTreeSet<String> = ["checkpoints/tiny", "this", "zooms", "297", "ms"].map(String::from).into();
    let header = format!("{:<74}· chec", " ● ready");
    assert_eq!(cut_words(&header, 80, &whole).len(), 1);
    assert_eq!(cut_words("│Pareto front: z zooms thi│", 27, &whole).len(), 1);
    assert!(cut_words("│z zooms this│", 14, &whole).is_empty());
    assert!(cut_words("│z zooms th… │", 14, &whole).is_empty());
}
