//! The key table in docs/explorer.md is the key table: regenerate it from
//! `BINDINGS` and compare, so the documentation cannot drift from what the keys do.

use trojanscope::tui::keymap;

fn key_table() -> String {
    let mut out = String::from("| key | what it does | when |\n|---|---|---|\n");
    for entry in keymap::table() {
        let (b, when) = (entry.binding, entry.when());
        out.push_str(&format!("| `{}` | {} | {when} |\n", b.shown.replace('|', "\\|"), b.help.replace('|', "\\|")));
    }
    out
}

#[test]
fn the_explorer_docs_key_table_matches_the_bindings() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/explorer.md")).expect("docs/explorer.md");
    let table = key_table();
    assert!(doc.contains(&table), "the key table in docs/explorer.md is out of date; it should read:\n\n{table}");
}
