//! The explorer keeps a graph run's state as it keeps a study run's: on the
//! study's committed tiny run imported as a graph, in tmux at 160×48, an
//! ablation, a sweep and the patching maps; quit; reopen: the same screen with
//! nothing recomputed. `--fresh` starts clean and replaces the saved session.

mod tui_support;

use std::path::Path;
use std::time::Duration;
use tui_support::tmux::Tmux;
use tui_support::{data_dir, scratch};

const TEST_LIMIT: usize = 300;

fn explorer(checkpoints: &Path, fresh: bool) -> Vec<String> {
    let mut args = vec![
        format!("--checkpoints={}", checkpoints.display()),
        "--run=g".into(),
        format!("--data-dir={}", data_dir().display()),
        "--device=cpu".into(),
        format!("--test-limit={TEST_LIMIT}"),
    ];
    args.extend(fresh.then(|| "--fresh".to_string()));
    args
}

fn saved(checkpoints: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(checkpoints.join("g/session.json")).unwrap()).unwrap()
}

#[test]
fn a_graph_run_reopens_on_the_same_screen_without_recomputing_and_fresh_starts_clean() {
    let checkpoints = scratch("tui-graph-session");
    tui_support::tiny_as_graph(&checkpoints, TEST_LIMIT);
    let long = Duration::from_secs(60);
    let tmux = Tmux::start("graph-session-1", (160, 48), &explorer(&checkpoints, false));
    tmux.wait("the models", long, |s| s.contains("● ready"));
    // The second convolution (net.3) selected, its unit 2 ablated, the node
    // swept, every node patched.
    tmux.keys(&["2", "Right", "Right", "Right", "j", "j", "Space"]);
    tmux.wait("the ablation", long, |s| s.contains("ablating net.3:2 (zero)") && s.contains("300 images"));
    tmux.keys(&["w"]);
    tmux.wait("the sweep", long, |s| s.contains("sweep net.3 (zero)") && s.contains("● ready"));
    tmux.keys(&["P"]);
    tmux.wait("the patching maps", long, |s| s.contains("denoise on") && s.contains("● ready"));
    tmux.keys(&["5"]);
    let before = tmux.wait("the Ablation pane focused", long, |s| s.contains("● ready") && s.contains("history"));
    tmux.keys(&["q"]);
    assert!(tmux.wait_for_exit().contains("exited with 0"));
    drop(tmux);
    // The file is a graph session: the node, the focus, the one full answer.
    let file = saved(&checkpoints);
    assert_eq!((file["view"]["site"].as_str(), file["view"]["focus"].as_u64()), (Some("net.3"), Some(5)));
    assert_eq!(file["results"]["history"].as_array().unwrap().len(), 1);
    assert!(file["results"]["patch"].is_object() && file["results"]["sweeps"]["net.3"].is_object());

    let tmux = Tmux::start("graph-session-2", (160, 48), &explorer(&checkpoints, false));
    tmux.reopened_as(&before, "session restored: 3 results, nothing recomputed");
    drop(tmux);

    let tmux = Tmux::start("graph-session-3", (160, 48), &explorer(&checkpoints, true));
    let fresh = tmux.wait("a fresh session", long, |s| s.contains("● ready") && s.contains("a fresh session"));
    assert!(fresh.contains("No sweep of net.0 yet"), "{fresh}");
    tmux.keys(&["q"]);
    assert!(tmux.wait_for_exit().contains("exited with 0"));
    assert!(saved(&checkpoints)["results"]["history"].as_array().unwrap().is_empty(), "the fresh one replaced it");
}
