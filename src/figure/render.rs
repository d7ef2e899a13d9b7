//! One figure drawn twice by the same code, on plotters' SVG backend (vector, for
//! papers) and on its bitmap backend (the PNG), and written as `NAME.svg` and
//! `NAME.png`. Image panels are pixels in both: in the SVG an embedded PNG drawn
//! without smoothing (a 26×26 activation map as 676 rectangles would make every
//! file megabytes).

use base64::Engine;
use image::RgbImage;
use image::imageops::FilterType;
use plotters::coord::Shift;
use plotters::prelude::{BitMapBackend, DrawingArea, DrawingBackend, IntoDrawingArea, SVGBackend};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Pixels placed at `(x, y)`, stretched (nearest neighbour) to `width × height`.
pub struct Raster {
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
    pub image: RgbImage,
}

/// A figure kind: its height at `style::WIDTH`, and how it draws on any backend
/// (returning the image panels, which each backend places its own way).
pub trait Draw {
    fn height(&self) -> u32;
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<Vec<Raster>, String>;
}

/// plotters' errors as text.
pub fn failed(e: impl std::fmt::Display) -> String {
    format!("cannot draw the figure: {e}")
}

/// The SVG text and the PNG pixels of one figure.
pub struct Rendered {
    pub svg: String,
    pub png: RgbImage,
}

pub fn render(figure: &impl Draw) -> Result<Rendered, String> {
    super::style::register_font();
    let size = (super::style::WIDTH, figure.height());
    let mut svg = String::new();
    let rasters = {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&plotters::style::WHITE).map_err(failed)?;
        let rasters = figure.draw(&root)?;
        root.present().map_err(failed)?;
        rasters
    };
    embed(&mut svg, &rasters)?;
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&plotters::style::WHITE).map_err(failed)?;
        figure.draw(&root)?;
        root.present().map_err(failed)?;
    }
    let mut png = RgbImage::from_raw(size.0, size.1, pixels).ok_or("the bitmap has the figure's size")?;
    for r in &rasters {
        let stretched = image::imageops::resize(&r.image, r.width, r.height, FilterType::Nearest);
        image::imageops::replace(&mut png, &stretched, r.x as i64, r.y as i64);
    }
    Ok(Rendered { svg, png })
}

/// Adds each raster to the SVG as an embedded PNG, before its closing tag.
fn embed(svg: &mut String, rasters: &[Raster]) -> Result<(), String> {
    let end = svg.rfind("</svg>").ok_or("plotters wrote no closing </svg>")?;
    let mut images = String::new();
    for r in rasters {
        let mut png = Vec::new();
        r.image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| format!("cannot encode a panel: {e}"))?;
        let data = base64::engine::general_purpose::STANDARD.encode(&png);
        let _ = writeln!(
            images,
            r#"<image x="{}" y="{}" width="{}" height="{}" preserveAspectRatio="none" style="image-rendering:pixelated" href="data:image/png;base64,{data}"/>"#,
            r.x, r.y, r.width, r.height
        );
    }
    svg.insert_str(end, &images);
    Ok(())
}

/// Writes `NAME.svg` and `NAME.png` into `dir` (created), each atomically and never
/// through a link (figures land in run folders); returns both paths.
pub fn save(figure: &impl Draw, dir: &Path, name: &str) -> Result<[PathBuf; 2], String> {
    let rendered = render(figure)?;
    let [svg, png] = ["svg", "png"].map(|ext| dir.join(format!("{name}.{ext}")));
    let write = |path: &Path, f: &dyn Fn(&Path) -> color_eyre::Result<()>| {
        crate::engine::checkpoint::write_atomically(path, f).map_err(|e| e.to_string())
    };
    let cannot =
        |path: &Path, e: &dyn std::fmt::Display| color_eyre::eyre::eyre!("cannot write {}: {e}", path.display());
    write(&svg, &|tmp| std::fs::write(tmp, &rendered.svg).map_err(|e| cannot(&svg, &e)))?;
    write(&png, &|tmp| rendered.png.save_with_format(tmp, image::ImageFormat::Png).map_err(|e| cannot(&png, &e)))?;
    Ok([svg, png])
}
