//! Where everything goes: every pane at once on a large terminal, one pane per
//! tab on a small one, and a message when the terminal is too small for either.
//! `update` uses the same geometry for mouse hits that `draw` uses for drawing.

use super::panes::{Pane, WIDE_ROWS};
use ratatui::layout::{Constraint, Layout, Position, Rect};

/// Below this the explorer only shows a "too small" message.
pub const MIN_SIZE: (u16, u16) = (80, 24);
/// From this size on every pane is visible at once.
pub const WIDE_SIZE: (u16, u16) = (160, 48);

#[derive(Debug, Clone, PartialEq)]
pub struct Screen {
    pub header: Rect,
    /// The tab bar (tabbed layout only).
    pub tabs: Option<Rect>,
    /// The visible panes and their areas.
    pub panes: Vec<(Pane, Rect)>,
    /// The focused pane's one-line hint: what it shows, what its words mean.
    pub hint: Rect,
    pub footer: Rect,
}

impl Screen {
    /// The layout for a terminal of `area`, or `None` when it is too small.
    /// `zoomed` shows the focused pane alone (with the tab bar) however large the
    /// terminal is.
    pub fn new(area: Rect, focus: Pane, zoomed: bool) -> Option<Screen> {
        if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
            return None;
        }
        if !zoomed && area.width >= WIDE_SIZE.0 && area.height >= WIDE_SIZE.1 {
            Some(Screen::wide(area))
        } else {
            let [header, tabs, pane, hint, footer] = area.layout(&Layout::vertical([
                Constraint::Length(1),
                Constraint::Length(1),
                Constraint::Fill(1),
                Constraint::Length(1),
                Constraint::Length(1),
            ]));
            Some(Screen { header, tabs: Some(tabs), panes: vec![(focus, pane)], hint, footer })
        }
    }

    /// Every pane at once, placed from `panes::WIDE_ROWS`.
    fn wide(area: Rect) -> Screen {
        let heights = WIDE_ROWS.iter().map(|(height, _)| *height);
        let rows = area.layout_vec(&Layout::vertical(
            std::iter::once(Constraint::Length(1)).chain(heights).chain([Constraint::Length(1); 2]),
        ));
        let mut panes = Vec::new();
        for ((_, row), rect) in WIDE_ROWS.iter().zip(&rows[1..]) {
            let widths = row.iter().map(|(_, width)| *width);
            let rects = rect.layout_vec(&Layout::horizontal(widths));
            panes.extend(row.iter().map(|(pane, _)| *pane).zip(rects));
        }
        Screen { header: rows[0], tabs: None, panes, hint: rows[rows.len() - 2], footer: rows[rows.len() - 1] }
    }

    pub fn area_of(&self, pane: Pane) -> Option<Rect> {
        self.panes.iter().find(|(p, _)| *p == pane).map(|(_, r)| *r)
    }

    /// The pane under a screen position.
    pub fn pane_at(&self, x: u16, y: u16) -> Option<(Pane, Rect)> {
        self.panes.iter().copied().find(|(_, r)| r.contains(Position::new(x, y)))
    }

    /// The tab under a screen position (tabbed layout).
    pub fn tab_at(&self, x: u16, y: u16) -> Option<Pane> {
        let tabs = self.tabs?;
        if !tabs.contains(Position::new(x, y)) {
            return None;
        }
        // The tabbed layout shows the focused pane alone.
        let focus = self.panes.first().map(|(p, _)| *p).unwrap_or(Pane::Layers);
        let mut left = tabs.x;
        for pane in Pane::ALL {
            let width = tab_label(pane, focus, tabs.width).chars().count() as u16 + 1;
            if x < left + width {
                return Some(pane);
            }
            left += width;
        }
        None
    }
}

/// A tab's text in a bar `width` wide: ` 2 Channels `; `2 Channels` when the
/// padded tabs would not fit; and when even those would not, the focused tab's
/// title and the others' numbers only.
pub fn tab_label(pane: Pane, focus: Pane, width: u16) -> String {
    let padded = |p: Pane| format!(" {} {} ", p.number(), p.title());
    let compact = |p: Pane| format!("{} {}", p.number(), p.title());
    let fits = |label: &dyn Fn(Pane) -> String| {
        Pane::ALL.iter().map(|&p| label(p).chars().count() + 1).sum::<usize>() <= width as usize
    };
    if fits(&padded) {
        padded(pane)
    } else if fits(&compact) || pane == focus {
        compact(pane)
    } else {
        pane.number().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_pick_the_layout() {
        assert!(Screen::new(Rect::new(0, 0, 79, 24), Pane::Layers, false).is_none());
        assert!(Screen::new(Rect::new(0, 0, 80, 23), Pane::Layers, false).is_none());
        let small = Screen::new(Rect::new(0, 0, 80, 24), Pane::Ablation, false).unwrap();
        assert_eq!(small.panes.len(), 1);
        assert_eq!(small.panes[0], (Pane::Ablation, Rect::new(0, 2, 80, 20)));
        let zoomed = Screen::new(Rect::new(0, 0, 160, 48), Pane::Circuit, true).unwrap();
        assert_eq!(zoomed.panes, vec![(Pane::Circuit, Rect::new(0, 2, 160, 44))]);
        let wide = Screen::new(Rect::new(0, 0, 160, 48), Pane::Layers, false).unwrap();
        assert_eq!(wide.panes.len(), Pane::ALL.len());
        // Panes tile the body without overlapping.
        let area: u32 = wide.panes.iter().map(|(_, r)| r.area()).sum();
        assert_eq!(area, 160 * 45);
        assert_eq!(wide.pane_at(0, 1).map(|(p, _)| p), Some(Pane::Layers));
        assert_eq!(wide.pane_at(0, 45).map(|(p, _)| p), Some(Pane::Training));
        assert_eq!(wide.pane_at(90, 45).map(|(p, _)| p), Some(Pane::Trigger));
        assert_eq!(wide.pane_at(159, 45).map(|(p, _)| p), Some(Pane::Circuit));
        assert_eq!((wide.hint.y, wide.footer.y), (46, 47));
    }

    #[test]
    fn tabs_are_hit_where_they_are_drawn() {
        let small = Screen::new(Rect::new(0, 0, 100, 30), Pane::Layers, false).unwrap();
        assert_eq!(small.tab_at(0, 1), Some(Pane::Layers));
        let second = tab_label(Pane::Layers, Pane::Layers, 100).chars().count() as u16 + 1;
        assert_eq!(small.tab_at(second, 1), Some(Pane::Channels));
        assert_eq!(small.tab_at(second, 5), None);
    }

    #[test]
    fn scrolling_keeps_the_selection_visible() {
        use crate::tui::panes::scroll_offset;
        assert_eq!(scroll_offset(3, 10, 20), 0);
        assert_eq!(scroll_offset(3, 64, 10), 0);
        assert_eq!(scroll_offset(12, 64, 10), 3);
        assert_eq!(scroll_offset(63, 64, 10), 54);
    }

    #[test]
    fn the_wide_layout_places_every_pane_once() {
        let placed: Vec<Pane> = WIDE_ROWS.iter().flat_map(|(_, row)| row.iter().map(|(p, _)| *p)).collect();
        for pane in Pane::ALL {
            assert_eq!(placed.iter().filter(|&&p| p == pane).count(), 1, "{} is not placed once", pane.title());
        }
    }
}
