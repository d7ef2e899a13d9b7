//! Reading written figures back: both files of a figure exist, the PNG is a
//! figure's width, and the SVG's text elements (titles, axis labels, tick labels,
//! colour bar values) as a list.
#![allow(dead_code)]

use std::path::Path;

/// `dir/NAME.svg`'s text after checking that it is one `<svg>` element and that
/// `dir/NAME.png` is a PNG `style::WIDTH` pixels wide.
pub fn figure_svg(dir: &Path, name: &str) -> String {
    let png = dir.join(format!("{name}.png"));
    let image = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert_eq!(image.width(), trojanscope::figure::style::WIDTH, "{name}");
    let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).unwrap_or_else(|e| panic!("{name}.svg: {e}"));
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{name}.svg is not one <svg> element");
    svg
}

/// The texts of the SVG's `<text>` elements, in order, trimmed.
pub fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| t.split_once('>').and_then(|(_, rest)| rest.split_once("</text>")))
        .map(|(t, _)| t.trim().to_string())
        .collect()
}
