//! The key table: one list drives key dispatch, the help overlay and the footer hints.

use super::pane::Pane;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Everything a key can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    QuitNow,
    Help,
    Zoom,
    Close,
    NextPane,
    PrevPane,
    Focus(Pane),
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Select,
    ToggleAblation,
    Sort,
    ReverseSort,
    Sweep,
    CycleMode,
    ClearSet,
    TrainView,
    NextDigit,
    PrevDigit,
    Export,
    Retrain,
    Stop,
    Recover,
    Unlearn,
    Visualize,
    Patch,
    Direction,
    Circuit,
    PruneCurves,
    Yes,
    No,
}

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Always, unless a popup or the help overlay is open.
    Main,
    /// While a yes/no question is open.
    Confirm,
    /// While an error, a notice or the help overlay is open.
    Overlay,
    /// Everywhere, popups included.
    Always,
}

/// One row of the key table.
pub struct Binding {
    pub keys: &'static [(KeyCode, KeyModifiers)],
    /// How the keys are written in the help and the footer.
    pub shown: &'static str,
    pub action: Action,
    pub scope: Scope,
    pub help: &'static str,
    /// The footer's short label (bindings without one appear only in the help).
    pub hint: Option<&'static str>,
}

const NONE: KeyModifiers = KeyModifiers::NONE;
const CTRL: KeyModifiers = KeyModifiers::CONTROL;

const fn ch(c: char) -> (KeyCode, KeyModifiers) {
    (KeyCode::Char(c), NONE)
}

const fn key(code: KeyCode) -> (KeyCode, KeyModifiers) {
    (code, NONE)
}

macro_rules! bind {
    ($keys:expr, $shown:expr, $action:expr, $scope:expr, $help:expr, $hint:expr) => {
        Binding { keys: $keys, shown: $shown, action: $action, scope: $scope, help: $help, hint: $hint }
    };
}

pub const BINDINGS: &[Binding] = &[
    bind!(&[(KeyCode::Char('c'), CTRL)], "Ctrl-C", Action::QuitNow, Scope::Always, "quit now (stops training)", None),
    bind!(&[ch('y')], "y", Action::Yes, Scope::Confirm, "answer yes", Some("yes")),
    bind!(&[ch('n'), key(KeyCode::Esc)], "n/Esc", Action::No, Scope::Confirm, "answer no", Some("no")),
    bind!(&[ch('?')], "?", Action::Help, Scope::Always, "show or hide this help", Some("help")),
    bind!(
        &[key(KeyCode::Esc), key(KeyCode::Enter), ch('q')],
        "Esc/Enter",
        Action::Close,
        Scope::Overlay,
        "close popup or help",
        Some("close")
    ),
    bind!(&[ch('q')], "q", Action::Quit, Scope::Main, "quit (asks while training)", Some("quit")),
    bind!(&[ch('z')], "z", Action::Zoom, Scope::Main, "zoom: the focused pane alone", Some("zoom")),
    bind!(&[key(KeyCode::Tab)], "Tab", Action::NextPane, Scope::Main, "next pane", Some("pane")),
    bind!(&[key(KeyCode::BackTab)], "Shift-Tab", Action::PrevPane, Scope::Main, "previous pane", None),
    bind!(
        &[ch('1'), ch('2'), ch('3'), ch('4'), ch('5'), ch('6'), ch('7'), ch('8')],
        "1–8",
        Action::Focus(Pane::Layers),
        Scope::Main,
        "focus that pane",
        None
    ),
    bind!(&[key(KeyCode::Up), ch('k')], "↑/k", Action::Up, Scope::Main, "move up (rows, fields)", None),
    bind!(&[key(KeyCode::Down), ch('j')], "↓/j", Action::Down, Scope::Main, "move down", Some("move")),
    bind!(&[key(KeyCode::Left), ch('h')], "←/h", Action::Left, Scope::Main, "previous layer / lower value", None),
    bind!(
        &[key(KeyCode::Right), ch('l')],
        "→/l",
        Action::Right,
        Scope::Main,
        "next layer / raise value",
        Some("layer")
    ),
    bind!(&[key(KeyCode::PageUp)], "PgUp", Action::PageUp, Scope::Main, "page up", None),
    bind!(&[key(KeyCode::PageDown)], "PgDn", Action::PageDown, Scope::Main, "page down", None),
    bind!(&[key(KeyCode::Home), ch('g')], "g/Home", Action::Top, Scope::Main, "first row", None),
    bind!(&[key(KeyCode::End), ch('G')], "G/End", Action::Bottom, Scope::Main, "last row", None),
    bind!(&[key(KeyCode::Enter)], "Enter", Action::Select, Scope::Main, "open / restore set / circuit", Some("select")),
    bind!(&[ch(' ')], "Space", Action::ToggleAblation, Scope::Main, "toggle channel in ablation", Some("ablate")),
    bind!(&[ch('s')], "s", Action::Sort, Scope::Main, "sort channels by next column", Some("sort")),
    bind!(&[ch('S')], "S", Action::ReverseSort, Scope::Main, "reverse the channel order", None),
    bind!(&[ch('w')], "w", Action::Sweep, Scope::Main, "sweep: ablate each unit", Some("sweep")),
    bind!(&[ch('m')], "m", Action::CycleMode, Scope::Main, "mode: weight → zero → mean", Some("mode")),
    bind!(&[ch('c')], "c", Action::ClearSet, Scope::Main, "clear the ablation set", Some("clear")),
    bind!(&[ch('t')], "t", Action::TrainView, Scope::Main, "training view", Some("train")),
    bind!(&[ch('n')], "n", Action::NextDigit, Scope::Main, "next test digit", Some("digit")),
    bind!(&[ch('p')], "p", Action::PrevDigit, Scope::Main, "previous test digit", None),
    bind!(&[ch('e')], "e", Action::Export, Scope::Main, "export PNG, CSV, Markdown", Some("export")),
    bind!(&[ch('r')], "r", Action::Retrain, Scope::Main, "retrain with the settings", Some("retrain")),
    bind!(&[ch('R')], "R", Action::Recover, Scope::Main, "recover the trigger (Neural Cleanse)", Some("recover")),
    bind!(&[ch('u')], "u", Action::Unlearn, Scope::Main, "unlearn the flagged trigger", None),
    bind!(&[ch('v')], "v", Action::Visualize, Scope::Main, "visualise the selected unit", None),
    bind!(&[ch('P')], "P", Action::Patch, Scope::Main, "patch every unit (both ways)", Some("patch")),
    bind!(&[ch('d')], "d", Action::Direction, Scope::Main, "denoise ↔ noise patching", None),
    bind!(&[ch('C')], "C", Action::Circuit, Scope::Main, "search for the circuit", Some("circuit")),
    bind!(&[ch('f')], "f", Action::PruneCurves, Scope::Main, "pruning curves of the layer", None),
    bind!(&[ch('x')], "x", Action::Stop, Scope::Main, "stop the running job", Some("stop")),
];

/// Which scopes are live right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Main,
    Confirm,
    Overlay,
}

impl Context {
    pub fn includes(self, scope: Scope) -> bool {
        matches!(
            (self, scope),
            (_, Scope::Always)
                | (Context::Main, Scope::Main)
                | (Context::Confirm, Scope::Confirm)
                | (Context::Overlay, Scope::Overlay)
        )
    }
}

fn matches(binding_key: &(KeyCode, KeyModifiers), key: &KeyEvent) -> bool {
    // Shift is part of the character itself ('G', '?') and of BackTab.
    let relevant = KeyModifiers::CONTROL | KeyModifiers::ALT;
    binding_key.0 == key.code && (key.modifiers & relevant) == (binding_key.1 & relevant)
}

/// The action a key asks for in `context`, from the first matching binding. The
/// digits share one binding; each focuses the pane of its number.
pub fn action_for(key: &KeyEvent, context: Context) -> Option<Action> {
    let binding =
        BINDINGS.iter().filter(|b| context.includes(b.scope)).find(|b| b.keys.iter().any(|k| matches(k, key)))?;
    match (binding.action, key.code) {
        (Action::Focus(_), KeyCode::Char(c)) => {
            let number = c.to_digit(10)? as usize;
            Pane::ALL.get(number.checked_sub(1)?).map(|&p| Action::Focus(p))
        }
        (action, _) => Some(action),
    }
}

/// The footer: `key label` pairs for the live bindings that have a hint.
pub fn hints(context: Context) -> Vec<(&'static str, &'static str)> {
    BINDINGS.iter().filter(|b| context.includes(b.scope)).filter_map(|b| b.hint.map(|h| (b.shown, h))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn the_same_key_means_different_things_in_different_contexts() {
        let main = Context::Main;
        assert_eq!(action_for(&press(KeyCode::Char('n'), NONE), main), Some(Action::NextDigit));
        assert_eq!(action_for(&press(KeyCode::Char('n'), NONE), Context::Confirm), Some(Action::No));
        assert_eq!(action_for(&press(KeyCode::Char('q'), NONE), Context::Overlay), Some(Action::Close));
        assert_eq!(action_for(&press(KeyCode::Char('q'), NONE), main), Some(Action::Quit));
        assert_eq!(action_for(&press(KeyCode::Char('c'), CTRL), Context::Confirm), Some(Action::QuitNow));
        assert_eq!(action_for(&press(KeyCode::Char('c'), NONE), main), Some(Action::ClearSet));
        assert_eq!(action_for(&press(KeyCode::Char('G'), KeyModifiers::SHIFT), main), Some(Action::Bottom));
        assert_eq!(action_for(&press(KeyCode::BackTab, KeyModifiers::SHIFT), main), Some(Action::PrevPane));
        assert_eq!(action_for(&press(KeyCode::Char('w'), NONE), Context::Overlay), None);
        assert_eq!(action_for(&press(KeyCode::Char('1'), NONE), main), Some(Action::Focus(Pane::Layers)));
        assert_eq!(action_for(&press(KeyCode::Char('8'), NONE), main), Some(Action::Focus(Pane::Circuit)));
    }

    #[test]
    fn every_binding_is_reachable_and_documented() {
        for (i, b) in BINDINGS.iter().enumerate() {
            assert!(!b.help.is_empty() && !b.shown.is_empty());
            // No earlier binding in an overlapping scope swallows all of its keys.
            let shadowed = b.keys.iter().all(|k| {
                BINDINGS[..i].iter().any(|e| (e.scope == b.scope || e.scope == Scope::Always) && e.keys.contains(k))
            });
            assert!(!shadowed, "{} is unreachable", b.shown);
        }
        let footer = hints(Context::Main);
        assert!(footer.contains(&("q", "quit")) && footer.contains(&("Space", "ablate")));
        assert!(!footer.iter().any(|(_, h)| *h == "yes"));
    }
}
