//! The one key table: the explorer's own bindings (`keys::GLOBAL`) and every
//! pane's (`panes::bindings`). Key dispatch, the help overlay, the footer and the
//! key table in docs/explorer.md are all read from it.

use super::keys::{self, Action, Binding, Context, Scope};
use super::panes::{self, Pane};
use ratatui::crossterm::event::{KeyCode, KeyEvent};

/// A binding and the pane that owns it (`None`: the explorer's own).
#[derive(Clone, Copy)]
pub struct Entry {
    pub owner: Option<Pane>,
    pub binding: &'static Binding,
}

impl Entry {
    /// Where it works, in words ("" for everywhere in the main view).
    pub fn when(&self) -> String {
        match (self.binding.scope, self.owner) {
            (Scope::Focused, Some(pane)) => format!("in {}", pane.title()),
            (Scope::Confirm, _) => "in a question".into(),
            (Scope::Overlay, _) => "in a popup or the help".into(),
            (Scope::Always, _) => "anywhere".into(),
            _ => String::new(),
        }
    }

    fn live(&self, context: Context, focus: Pane) -> bool {
        context.includes(self.binding.scope) && (self.binding.scope != Scope::Focused || self.owner == Some(focus))
    }
}

/// Every binding: the explorer's, then each pane's in pane order.
pub fn table() -> Vec<Entry> {
    let global = keys::GLOBAL.iter().map(|binding| Entry { owner: None, binding });
    let owned =
        Pane::ALL.iter().flat_map(|&p| panes::bindings(p).iter().map(move |binding| Entry { owner: Some(p), binding }));
    global.chain(owned).collect()
}

/// The live bindings in lookup order: the focused pane's own first (they override
/// the explorer's on the same key), then the rest of the table.
fn live(context: Context, focus: Pane) -> Vec<Entry> {
    let (mut first, rest): (Vec<Entry>, Vec<Entry>) =
        table().into_iter().filter(|e| e.live(context, focus)).partition(|e| e.binding.scope == Scope::Focused);
    first.extend(rest);
    first
}

/// The action a key asks for and the pane that owns it. The digits share one
/// binding; each focuses the pane of its number.
pub fn action_for(key: &KeyEvent, context: Context, focus: Pane) -> Option<(Option<Pane>, Action)> {
    let entry = live(context, focus).into_iter().find(|e| e.binding.keys.iter().any(|k| keys::matches(k, key)))?;
    match (entry.binding.action, key.code) {
        (Action::Focus(_), KeyCode::Char(c)) => {
            let number = c.to_digit(10)? as usize;
            (1..=Pane::ALL.len()).contains(&number).then_some((None, Action::Focus(number)))
        }
        (action, _) => Some((entry.owner, action)),
    }
}

/// The footer: `key label` pairs of the live bindings with a hint, the focused
/// pane's first.
pub fn hints(context: Context, focus: Pane) -> Vec<(&'static str, &'static str)> {
    let mut entries = live(context, focus);
    // The focused pane's keys lead, then the explorer's, then other panes'.
    entries.sort_by_key(|e| match e.owner {
        Some(p) if p == focus => 0,
        None => 1,
        Some(_) => 2,
    });
    entries.iter().filter_map(|e| e.binding.hint.map(|h| (e.binding.shown, h))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::KeyModifiers;

    fn press(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    fn action(c: char, context: Context, focus: Pane) -> Option<Action> {
        action_for(&press(KeyCode::Char(c), KeyModifiers::NONE), context, focus).map(|(_, a)| a)
    }

    #[test]
    fn the_same_key_means_different_things_in_different_contexts_and_panes() {
        let (main, layers) = (Context::Main, Pane::Layers);
        assert_eq!(action('n', main, layers), Some(Action::NextDigit));
        assert_eq!(action('n', Context::Confirm, layers), Some(Action::No));
        assert_eq!(action('q', Context::Overlay, layers), Some(Action::Close));
        assert_eq!(action('q', main, layers), Some(Action::Quit));
        assert_eq!(action('c', main, layers), Some(Action::ClearSet));
        assert_eq!(action('w', Context::Overlay, layers), None);
        assert_eq!(action('1', main, layers), Some(Action::Focus(1)));
        assert_eq!(action('8', main, layers), Some(Action::Focus(8)));
        let ctrl_c = press(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(action_for(&ctrl_c, Context::Confirm, layers), Some((None, Action::QuitNow)));
        let big_g = press(KeyCode::Char('G'), KeyModifiers::SHIFT);
        assert_eq!(action_for(&big_g, main, layers), Some((None, Action::Bottom)));
        // ← moves to the previous layer, except where the focused pane says otherwise.
        let left = press(KeyCode::Left, KeyModifiers::NONE);
        assert_eq!(action_for(&left, main, layers), Some((None, Action::Left)));
        let (owner, _) = action_for(&left, main, Pane::Training).unwrap();
        assert_eq!(owner, Some(Pane::Training));
        // A pane's key works only where it says: s sorts in Channels alone.
        assert!(matches!(
            action_for(&press(KeyCode::Char('s'), KeyModifiers::NONE), main, Pane::Channels),
            Some((Some(Pane::Channels), Action::Pane(_)))
        ));
        assert_eq!(action('s', main, layers), None);
    }

    #[test]
    fn every_binding_is_reachable_and_documented() {
        let all = table();
        for (i, e) in all.iter().enumerate() {
            let b = e.binding;
            assert!(!b.help.is_empty() && !b.shown.is_empty());
            // No earlier binding live wherever this one is swallows all of its keys.
            let shadowed = b.keys.iter().all(|k| {
                all[..i].iter().any(|o| {
                    let same_place = o.binding.scope == b.scope && (b.scope != Scope::Focused || o.owner == e.owner);
                    (same_place || o.binding.scope == Scope::Always) && o.binding.keys.contains(k)
                })
            });
            assert!(!shadowed, "{} is unreachable", b.shown);
        }
        let footer = hints(Context::Main, Pane::Channels);
        assert!(footer.contains(&("q", "quit")) && footer.contains(&("Space", "ablate")));
        assert_eq!(footer.first(), Some(&("s", "sort")), "the focused pane's keys come first");
        assert!(!footer.iter().any(|(_, h)| *h == "yes"));
    }
}
