//! Every pane at 80×24 (one tab each) and the whole screen at 160×48 and 200×60,
//! plus the overlays and the too-small message, as text snapshots (insta). The
//! state comes from the committed tiny run (fixed weights), so the numbers are
//! exact on any CPU path; only a recovery's and a visualisation's results, which
//! an optimisation computes, are masked (see `tui_support::masked_numbers_in`).

mod tui_support;

use insta::assert_snapshot;
use ratatui::crossterm::event::KeyCode;
use trojanscope::engine::lab::ModelKind;
use trojanscope::tui::effect::Popup;
use trojanscope::tui::images::{ImageStore, Renderer};
use trojanscope::tui::panes::Pane;
use trojanscope::tui::protocol::Job;
use tui_support::{Harness, masked, masked_numbers_in};

/// The tiny run with conv1 unit 0 ablated and conv1 swept.
fn explored() -> Harness {
    let mut h = Harness::ready((80, 24));
    if let Some(run) = h.app.study.run.as_mut() {
        // The real path is a temporary folder.
        run.root = "checkpoints/tiny".into();
    }
    h.type_keys(" w");
    h.wait_for("the ablation and the sweep", |app| {
        app.study.ablation.result.is_some() && !app.jobs.is_running(Job::Sweep)
    });
    // The worker's timing varies from run to run.
    if let Some(result) = h.app.study.ablation.result.as_mut() {
        result.seconds = 0.004;
    }
    h
}

#[test]
fn every_pane_at_80x24() {
    let mut h = explored();
    for pane in Pane::ALL {
        h.press(KeyCode::Char(char::from_digit(pane.number() as u32, 10).unwrap()));
        assert_snapshot!(format!("80x24_{}", pane.title().to_lowercase()), masked(&h.screen(80, 24)));
    }
    // Linear layers draw their kernels as tiles and their activations as a table.
    h.type_keys("1jj3");
    assert_snapshot!("80x24_kernels_fc1", masked(&h.screen(80, 24)));
    h.press(KeyCode::Char('4'));
    assert_snapshot!("80x24_activations_fc1", masked(&h.screen(80, 24)));
    h.type_keys("1kk4");
    h.images = ImageStore::new(Renderer::Text);
    assert_snapshot!("80x24_activations_text_fallback", masked(&h.screen(80, 24)));
}

#[test]
fn every_pane_at_once_at_160x48_and_200x60() {
    let mut h = explored();
    h.press(KeyCode::Char('2'));
    assert_snapshot!("160x48_all_panes", masked(&h.screen(160, 48)));
    assert_snapshot!("200x60_all_panes", masked(&h.screen(200, 60)));
}

#[test]
fn overlays_and_a_terminal_too_small() {
    let mut h = explored();
    h.press(KeyCode::Char('?'));
    assert_snapshot!("200x60_help", masked(&h.screen(200, 60)));
    assert_snapshot!("80x24_help", masked(&h.screen(80, 24)));
    h.press(KeyCode::Esc);
    h.app.popup = Some(Popup::Error("Sweeping the layer failed: an example of an error message.".into()));
    assert_snapshot!("80x24_error", masked(&h.screen(80, 24)));
    h.press(KeyCode::Esc);
    h.press(KeyCode::Char('r'));
    assert_snapshot!("80x24_confirm_retrain", masked(&h.screen(80, 24)));
    h.press(KeyCode::Char('n'));
    assert!(h.app.popup.is_none());
    assert_snapshot!("60x20_too_small", h.screen(60, 20));
    assert_snapshot!("10x3_too_small", h.screen(10, 3));
}

/// A recovery's masks and patterns and a visualisation's images come out of
/// hundreds of optimisation steps, whose rounding differs between CPUs (a pixel
/// moved with libtorch's AVX2 kernels): they are replaced by one fixed picture, a
/// top-to-bottom ramp with the planted trigger's square, so the snapshot checks
/// where and how big they are drawn.
fn with_a_fixed_picture_for_what_was_optimised(h: &mut Harness) {
    let square: Vec<f32> =
        (0..28 * 28).map(|i| if i / 28 >= 22 && i % 28 >= 22 { 1.0 } else { (i / 28) as f32 / 40.0 }).collect();
    let trigger = &mut h.app.panes.trigger;
    for label in &mut trigger.report.as_mut().unwrap().labels {
        (label.mask, label.pattern) = (square.clone(), square.clone());
    }
    for (_, visual) in &mut trigger.visuals.as_mut().unwrap().models {
        visual.image = square.clone();
    }
}

#[test]
fn the_trigger_pane_after_a_recovery_and_a_visualisation() {
    let mut h = explored();
    h.app.panes.trigger.config =
        trojanscope::engine::cleanse::CleanseConfig { images: 320, test_images: 300, ..Default::default() };
    h.type_keys("Ry");
    h.wait_for("the recovery", |app| app.panes.trigger.report.is_some());
    h.press(KeyCode::Char('v'));
    h.wait_for("the visualisations", |app| app.panes.trigger.visuals.is_some());
    with_a_fixed_picture_for_what_was_optimised(&mut h);
    for (width, height) in [(80, 24), (160, 48)] {
        let screen = h.screen(width, height);
        let trigger = h.app.screen().unwrap().area_of(Pane::Trigger).unwrap();
        // The saved models' metrics under the table are exact.
        let exact = ["clean ", "poisoned ", "rehab "];
        assert_snapshot!(format!("{width}x{height}_trigger_recovered"), masked_numbers_in(&screen, trigger, &exact));
    }
}

#[test]
fn the_swap_table_top_images_and_the_rehab_models_kernels_at_80x24_and_160x48() {
    let mut h = explored();
    h.press(KeyCode::Char('W'));
    h.wait_for("the layer swaps", |app| app.panes.ablation.swaps.is_some());
    assert_eq!(h.app.focus, Pane::Ablation);
    assert_snapshot!("80x24_swaps", masked(&h.screen(80, 24)));
    h.type_keys("4i");
    h.wait_for("the top images", |app| app.panes.activations.top.is_some());
    assert_snapshot!("80x24_top_images", masked(&h.screen(80, 24)));
    h.press(KeyCode::Char('M'));
    h.wait_for("the rehab model under study", |app| app.study.ready && app.study.subject == ModelKind::Rehab);
    // The top images follow the model under study.
    h.wait_for("the rehab model's top images", |app| {
        app.panes.activations.top.as_ref().is_some_and(|t| t.model == ModelKind::Rehab)
    });
    // The set was evaluated again on the rehab model; its time varies from run to run.
    if let Some(result) = h.app.study.ablation.result.as_mut() {
        result.seconds = 0.004;
    }
    h.press(KeyCode::Char('3'));
    assert_snapshot!("80x24_kernels_rehab", masked(&h.screen(80, 24)));
    assert_snapshot!("160x48_swaps_top_images_rehab", masked(&h.screen(160, 48)));
}
