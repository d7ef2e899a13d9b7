//! How a command's result is printed: a table for people, JSON or CSV for scripts.

use crate::table::Table;
use color_eyre::eyre::Result;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Csv,
}

impl Format {
    pub fn from_flags(json: bool, csv: bool) -> Format {
        if json {
            Format::Json
        } else if csv {
            Format::Csv
        } else {
            Format::Text
        }
    }

    /// Prints `value` as JSON, or `table` as text or CSV.
    pub fn emit<T: Serialize>(self, value: &T, table: &Table) -> Result<()> {
        match self {
            Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Format::Csv => print!("{}", table.to_csv()),
            Format::Text => print!("{}", table.to_text()),
        }
        Ok(())
    }

    /// Whether progress bars and headings may be drawn (never around machine output).
    pub fn is_human(self) -> bool {
        self == Format::Text
    }
}
