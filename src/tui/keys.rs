//! What a key table is made of: actions, scopes, bindings, and the explorer's own
//! bindings. `keymap` joins them with the panes' into the one table that drives key
//! dispatch, the help overlay, the footer hints and the key table in docs/explorer.md.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key asks for: the explorer's own actions (moving, focusing, quitting…),
/// and the actions a pane defines for itself (`Pane`), which only that pane reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    QuitNow,
    Help,
    Zoom,
    Close,
    NextPane,
    PrevPane,
    /// Focus the pane of this number (1-based).
    Focus(usize),
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Top,
    Bottom,
    ToggleAblation,
    CycleMode,
    ClearSet,
    NextDigit,
    PrevDigit,
    /// The next model under study / the next model it is compared with.
    NextSubject,
    NextReference,
    Export,
    Stop,
    Yes,
    No,
    Pane(PaneKey),
}

/// An action a pane defines (a named constant in its module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaneKey(pub &'static str);

/// Where a binding applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Always, unless a popup or the help overlay is open.
    Main,
    /// Like `Main`, but only while the pane that owns the binding has the focus.
    Focused,
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

pub const fn ch(c: char) -> (KeyCode, KeyModifiers) {
    (KeyCode::Char(c), NONE)
}

pub const fn key(code: KeyCode) -> (KeyCode, KeyModifiers) {
    (code, NONE)
}

/// A binding in one line of the table.
#[macro_export]
macro_rules! bind {
    ($keys:expr, $shown:expr, $action:expr, $scope:expr, $help:expr, $hint:expr) => {
        $crate::tui::keys::Binding {
            keys: $keys,
            shown: $shown,
            action: $action,
            scope: $scope,
            help: $help,
            hint: $hint,
        }
    };
}

/// The explorer's own bindings; each pane adds its own (`panes::bindings`), and
/// `keymap` puts them together into the one key table.
pub const GLOBAL: &[Binding] = &[
    bind!(&[(KeyCode::Char('c'), CTRL)], "Ctrl-C", Action::QuitNow, Scope::Always, "quit now (stops training)", None),
    bind!(&[ch('y')], "y", Action::Yes, Scope::Confirm, "answer yes", Some("yes")),
    bind!(&[ch('n'), key(KeyCode::Esc)], "n/Esc", Action::No, Scope::Confirm, "answer no", Some("no")),
    bind!(&[ch('?')], "?", Action::Help, Scope::Always, "help: keys, then words", Some("help")),
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
        &[ch('1'), ch('2'), ch('3'), ch('4'), ch('5'), ch('6'), ch('7'), ch('8'), ch('9')],
        "1–9",
        Action::Focus(1),
        Scope::Main,
        "focus that pane",
        None
    ),
    bind!(&[key(KeyCode::Up), ch('k')], "↑/k", Action::Up, Scope::Main, "move up (rows, fields)", None),
    bind!(&[key(KeyCode::Down), ch('j')], "↓/j", Action::Down, Scope::Main, "move down", Some("move")),
    bind!(&[key(KeyCode::Left), ch('h')], "←/h", Action::Left, Scope::Main, "previous layer", None),
    bind!(&[key(KeyCode::Right), ch('l')], "→/l", Action::Right, Scope::Main, "next layer", Some("layer")),
    bind!(&[key(KeyCode::PageUp)], "PgUp", Action::PageUp, Scope::Main, "page up", None),
    bind!(&[key(KeyCode::PageDown)], "PgDn", Action::PageDown, Scope::Main, "page down", None),
    bind!(&[key(KeyCode::Home), ch('g')], "g/Home", Action::Top, Scope::Main, "first row", None),
    bind!(&[key(KeyCode::End), ch('G')], "G/End", Action::Bottom, Scope::Main, "last row", None),
    bind!(&[ch(' ')], "Space", Action::ToggleAblation, Scope::Main, "toggle the unit's ablation", Some("ablate")),
    bind!(&[ch('m')], "m", Action::CycleMode, Scope::Main, "mode: weight → zero → mean", Some("mode")),
    bind!(&[ch('c')], "c", Action::ClearSet, Scope::Main, "clear the ablation set", Some("clear")),
    bind!(&[ch('n')], "n", Action::NextDigit, Scope::Main, "next test digit", Some("digit")),
    bind!(&[ch('p')], "p", Action::PrevDigit, Scope::Main, "previous test digit", None),
    bind!(&[ch('M')], "M", Action::NextSubject, Scope::Main, "next model under study", Some("model")),
    bind!(&[ch('B')], "B", Action::NextReference, Scope::Main, "next model compared with", None),
    bind!(&[ch('e')], "e", Action::Export, Scope::Main, "export SVG + PNG, CSV, Markdown", Some("export")),
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
                | (Context::Main, Scope::Main | Scope::Focused)
                | (Context::Confirm, Scope::Confirm)
                | (Context::Overlay, Scope::Overlay)
        )
    }
}

/// Whether a pressed key is one of a binding's keys.
pub fn matches(binding_key: &(KeyCode, KeyModifiers), key: &KeyEvent) -> bool {
    // Shift is part of the character itself ('G', '?') and of BackTab.
    let relevant = KeyModifiers::CONTROL | KeyModifiers::ALT;
    binding_key.0 == key.code && (key.modifiers & relevant) == (binding_key.1 & relevant)
}
