//! Which of our own CPU loops run in this process: the best the CPU has, or lower
//! where `TROJANSCOPE_CPU_PATH` says so.
//!
//! The levels, highest first: `avx512` (the Winograd and fused training blocks,
//! the wide ablation kernel), `avx2` (the fused convolution-pooling loop, the
//! ablation kernel, the fused Adam with FMA), `portable` (the same loops in plain
//! Rust, what an ARM host runs), `torch` (none of our loops: libtorch's ops only,
//! exactly what runs on a GPU). The variable only lowers the level, never raises
//! it past what the CPU has, so a CPU without AVX-512 is simulated on one with it
//! and the GPU path runs on any CPU (CI runs the engine suite a second time so).

use std::sync::OnceLock;

/// The variable that lowers the level (`avx512`, `avx2`, `portable` or `torch`).
pub const VARIABLE: &str = "TROJANSCOPE_CPU_PATH";

/// How far our own loops go on this CPU, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CpuPath {
    /// libtorch's ops only, as on a GPU.
    Torch,
    /// Our loops in plain Rust.
    Portable,
    /// Our loops with AVX2 and FMA.
    Avx2,
    /// Our loops with AVX-512F too.
    Avx512,
}

impl CpuPath {
    const ALL: [CpuPath; 4] = [CpuPath::Torch, CpuPath::Portable, CpuPath::Avx2, CpuPath::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            CpuPath::Torch => "torch",
            CpuPath::Portable => "portable",
            CpuPath::Avx2 => "avx2",
            CpuPath::Avx512 => "avx512",
        }
    }

    fn parse(text: &str) -> Result<CpuPath, String> {
        let wanted = text.trim().to_ascii_lowercase();
        CpuPath::ALL.into_iter().find(|p| p.name() == wanted).ok_or_else(|| {
            let names: Vec<&str> = CpuPath::ALL.iter().map(|p| p.name()).collect();
            format!("{VARIABLE}={text:?} is not one of {}", names.join(", "))
        })
    }
}

impl std::fmt::Display for CpuPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The level this process runs and why, decided once.
#[derive(Debug, Clone)]
pub struct Choice {
    pub path: CpuPath,
    /// What the CPU has.
    pub detected: CpuPath,
    /// What `TROJANSCOPE_CPU_PATH` asked for, if set and valid.
    pub requested: Option<CpuPath>,
    /// A value of the variable that was not understood (then ignored).
    pub invalid: Option<String>,
}

impl Choice {
    fn from_env(detected: CpuPath, variable: Option<String>) -> Choice {
        let (requested, invalid) = match variable.map(|v| CpuPath::parse(&v)) {
            None => (None, None),
            Some(Ok(p)) => (Some(p), None),
            Some(Err(why)) => (None, Some(why)),
        };
        let path = requested.map_or(detected, |r| r.min(detected));
        Choice { path, detected, requested, invalid }
    }

    /// One line for `doctor`: the level and why.
    pub fn describe(&self) -> String {
        let cpu = format!("the CPU supports up to {}", self.detected);
        match (self.requested, &self.invalid) {
            (_, Some(why)) => format!("{} ({cpu}; ignored: {why})", self.path),
            (Some(r), None) if r > self.detected => {
                format!("{} ({VARIABLE}={r} asked for more than {cpu})", self.path)
            }
            (Some(r), None) => format!("{} ({VARIABLE}={r}; {cpu})", self.path),
            (None, None) => format!("{} ({cpu}; {VARIABLE} lowers it)", self.path),
        }
    }
}

/// What the CPU itself supports.
fn detected() -> CpuPath {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        if avx2 && std::arch::is_x86_feature_detected!("avx512f") {
            return CpuPath::Avx512;
        }
        if avx2 {
            return CpuPath::Avx2;
        }
    }
    CpuPath::Portable
}

/// This process's choice (read from the environment once).
pub fn choice() -> &'static Choice {
    static CHOICE: OnceLock<Choice> = OnceLock::new();
    CHOICE.get_or_init(|| Choice::from_env(detected(), std::env::var(VARIABLE).ok()))
}

/// The level this process runs.
pub fn path() -> CpuPath {
    choice().path
}

/// Whether loops needing `level` run here. A test of such a loop calls
/// `testing::runs` instead, which says so when it skips.
pub fn has(level: CpuPath) -> bool {
    path() >= level
}

/// For tests of one level's loops.
pub mod testing {
    use super::{CpuPath, path};
    use std::io::Write;

    /// Whether the loops of `level` run here; if not, prints a skip line that
    /// `cargo test`'s capture does not swallow (written straight to stderr), so a
    /// run on a lesser CPU shows what it did not test.
    pub fn runs(level: CpuPath, test: &str) -> bool {
        if path() >= level {
            return true;
        }
        let line = format!("skipped: {test} needs the {level} path; this run takes {}\n", path());
        let _ = std::io::stderr().write_all(line.as_bytes());
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_only_lowers_the_level() {
        let avx2 = Choice::from_env(CpuPath::Avx2, Some("avx512".into()));
        assert_eq!(avx2.path, CpuPath::Avx2, "no more than the CPU has");
        assert!(avx2.describe().contains("asked for more"), "{}", avx2.describe());
        let torch = Choice::from_env(CpuPath::Avx512, Some(" Torch ".into()));
        assert_eq!(torch.path, CpuPath::Torch);
        assert_eq!(Choice::from_env(CpuPath::Avx512, None).path, CpuPath::Avx512);
        let typo = Choice::from_env(CpuPath::Avx512, Some("avx1024".into()));
        assert_eq!(typo.path, CpuPath::Avx512, "an unknown value is ignored");
        assert!(typo.describe().contains("is not one of torch, portable, avx2, avx512"), "{}", typo.describe());
    }
}
