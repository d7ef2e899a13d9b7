//! `Display` and `FromStr` for the small enums named on the command line and in files.

/// For an enum with `ALL` and `name()`: displays as its name, parses its name
/// (case-insensitive) or anything `$alias(value, text)` accepts.
#[macro_export]
macro_rules! named_enum {
    ($ty:ty, $what:literal, $choices:literal) => {
        $crate::named_enum!($ty, $what, $choices, |_: $ty, _: &str| false);
    };
    ($ty:ty, $what:literal, $choices:literal, $alias:expr) => {
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let text = s.trim().to_ascii_lowercase();
                let alias = $alias;
                <$ty>::ALL
                    .into_iter()
                    .find(|v| v.name() == text || alias(*v, text.as_str()))
                    .ok_or_else(|| format!("unknown {} '{}': use {}", $what, s.trim(), $choices))
            }
        }
    };
}
