//! How long the explorer takes to draw a frame, every pane visible (200×60, also
//! 160×48 and 80×24), from a tiny real run's state into ratatui's TestBackend:
//! `cargo bench --bench frame`. "steady" redraws an unchanged state (a tick during
//! training); "moving" selects another channel before every frame, so the kernel
//! and activation pictures are rebuilt and re-encoded each time.

#[path = "../tests/tui_support/mod.rs"]
mod tui_support;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::KeyCode;
use std::time::{Duration, Instant};
use trojanscope::tui::panes::Pane;
use trojanscope::tui::protocol::Job;
use trojanscope::tui::render;
use tui_support::Harness;

const FRAMES: usize = 300;

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
}

fn measure(h: &mut Harness, size: (u16, u16), moving: bool) -> String {
    let mut terminal = Terminal::new(TestBackend::new(size.0, size.1)).unwrap();
    h.update(trojanscope::tui::app::Msg::Resize(size.0, size.1));
    let mut times = Vec::with_capacity(FRAMES);
    for i in 0..FRAMES + 20 {
        if moving {
            h.press(if i % 2 == 0 { KeyCode::Down } else { KeyCode::Up });
        }
        let clock = Instant::now();
        terminal.draw(|f| render::draw(f, &h.app, &mut h.images)).unwrap();
        if i >= 20 {
            times.push(clock.elapsed());
        }
    }
    times.sort();
    format!(
        "{}×{} {:<7} median {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        size.0,
        size.1,
        if moving { "moving" } else { "steady" },
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        percentile(&times, 1.0)
    )
}

fn main() {
    let mut h = Harness::ready((200, 60));
    h.type_keys(" w");
    h.wait_for("the ablation and the sweep", |app| {
        app.study.ablation.result.is_some() && !app.jobs.is_running(Job::Sweep)
    });
    // A full run's worth of chart points: the tiny run's 282 steps, twenty times.
    let history = h.app.panes.training.losses.clone();
    for _ in 0..19 {
        h.app.panes.training.losses.extend_from_slice(&history);
    }
    h.press(KeyCode::Char(char::from_digit(Pane::Channels.number() as u32, 10).unwrap()));
    println!("frame time over {FRAMES} frames (TestBackend, halfblocks):");
    for size in [(200, 60), (160, 48), (80, 24)] {
        for moving in [false, true] {
            println!("  {}", measure(&mut h, size, moving));
        }
    }
}
