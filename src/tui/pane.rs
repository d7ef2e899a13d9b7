//! The panes and their order.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pane {
    Layers,
    Channels,
    Kernels,
    Activations,
    Ablation,
    Training,
    Trigger,
    Circuit,
}

impl Pane {
    pub const ALL: [Pane; 8] = [
        Pane::Layers,
        Pane::Channels,
        Pane::Kernels,
        Pane::Activations,
        Pane::Ablation,
        Pane::Training,
        Pane::Trigger,
        Pane::Circuit,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Pane::Layers => "Layers",
            Pane::Channels => "Channels",
            Pane::Kernels => "Kernels",
            Pane::Activations => "Activations",
            Pane::Ablation => "Ablation",
            Pane::Training => "Training",
            Pane::Trigger => "Trigger",
            Pane::Circuit => "Circuit",
        }
    }

    fn position(self) -> usize {
        Pane::ALL.iter().position(|&p| p == self).unwrap_or(0)
    }

    /// The number key that focuses it (1–8).
    pub fn number(self) -> usize {
        self.position() + 1
    }

    pub fn next(self) -> Pane {
        Pane::ALL[(self.position() + 1) % Pane::ALL.len()]
    }

    pub fn previous(self) -> Pane {
        Pane::ALL[(self.position() + Pane::ALL.len() - 1) % Pane::ALL.len()]
    }
}
