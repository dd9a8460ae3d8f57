//! The results table (`results.json`, `results.md`) and the τ plot (`tau.svg`, `tau.png`).

use std::fmt::Write as _;
use std::path::Path;

use eda_core::Result;

pub use crate::results::{DemoResults, MethodResult, RESULTS_FORMAT};

impl DemoResults {
    /// The comparison as a Markdown table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| target | method | τ | τ_ref | α | speedup | trainable params | train samples | train steps | train s |");
        let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in &self.rows {
            let tr = r.tau_reference.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} | {} | {:.2} | {:.2}x | {} | {} | {} | {:.1} |",
                r.target, r.method, r.tau, tr, r.alpha, r.speedup, r.trainable_params, r.train_samples, r.train_steps, r.train_seconds
            );
        }
        let _ = writeln!(s, "\nτ: tokens per target verification cycle (bonus token included); speedup: measured tokens/s vs autoregressive decoding in the same run; {}; selection keeps {:.0}% of the regenerated samples.", self.tree, self.select_fraction * 100.0);
        s
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

const COLORS: [&str; 8] = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f"];

/// Grouped bar chart of τ per method per target, as SVG text.
pub fn tau_svg(results: &DemoResults) -> String {
    let mut targets: Vec<&str> = Vec::new();
    let mut methods: Vec<&str> = Vec::new();
    for r in &results.rows {
        if !targets.contains(&r.target.as_str()) {
            targets.push(&r.target);
        }
        if !methods.contains(&r.method.as_str()) {
            methods.push(&r.method);
        }
    }
    let max_tau = results.rows.iter().map(|r| r.tau).fold(1.0f64, f64::max).ceil();
    let (w, h, left, top, bottom) = (180.0 * targets.len().max(1) as f64 + 220.0, 360.0, 50.0, 30.0, 40.0);
    let plot_h = h - top - bottom;
    let group_w = 180.0;
    let bar_w = (group_w - 20.0) / methods.len().max(1) as f64;
    let y = |v: f64| top + plot_h * (1.0 - v / max_tau);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    let _ = writeln!(s, "<text x=\"{left}\" y=\"18\" font-size=\"14\">τ (tokens per verification cycle) per target and method</text>");
    let mut t = 0.0;
    while t <= max_tau + 1e-9 {
        let _ = writeln!(s, "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{t:.1}</text>", left + group_w * targets.len() as f64, left - 4.0, y(t) + 4.0, yy = y(t));
        t += if max_tau > 4.0 { 1.0 } else { 0.5 };
    }
    for (ti, target) in targets.iter().enumerate() {
        let gx = left + group_w * ti as f64 + 10.0;
        for (mi, method) in methods.iter().enumerate() {
            if let Some(r) = results.get(target, method) {
                let x = gx + bar_w * mi as f64;
                let _ = writeln!(
                    s,
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} / {}: τ = {:.2}</title></rect>",
                    y(r.tau),
                    bar_w - 2.0,
                    (y(0.0) - y(r.tau)).max(0.0),
                    COLORS[mi % COLORS.len()],
                    esc(target),
                    esc(method),
                    r.tau
                );
            }
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            gx + (group_w - 20.0) / 2.0,
            h - bottom + 18.0,
            esc(target)
        );
    }
    let lx = left + group_w * targets.len() as f64 + 20.0;
    for (mi, method) in methods.iter().enumerate() {
        let ly = top + 20.0 * mi as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{lx}\" y=\"{ly}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            COLORS[mi % COLORS.len()],
            lx + 18.0,
            ly + 11.0,
            esc(method)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The same chart as a PNG drawn with `plotters` (bars and grid only: the workspace builds
/// plotters without a font backend, so labels are in the SVG and the table).
pub fn tau_png(results: &DemoResults, path: &Path) -> std::result::Result<(), String> {
    use plotters::prelude::*;
    let mut targets: Vec<&str> = Vec::new();
    let mut methods: Vec<&str> = Vec::new();
    for r in &results.rows {
        if !targets.contains(&r.target.as_str()) {
            targets.push(&r.target);
        }
        if !methods.contains(&r.method.as_str()) {
            methods.push(&r.method);
        }
    }
    let max_tau = results.rows.iter().map(|r| r.tau).fold(1.0f64, f64::max).ceil();
    let (w, h) = (160 * targets.len().max(1) as u32 + 40, 320u32);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, top, bottom) = (20i32, 10i32, 20i32);
    let plot_h = (h as i32 - top - bottom) as f64;
    let y = |v: f64| top + (plot_h * (1.0 - v / max_tau)) as i32;
    let mut t = 0.0;
    while t <= max_tau + 1e-9 {
        root.draw(&PathElement::new(vec![(left, y(t)), (w as i32 - 10, y(t))], RGBColor(220, 220, 220))).map_err(|e| e.to_string())?;
        t += 1.0;
    }
    let palette = [
        RGBColor(0x4e, 0x79, 0xa7),
        RGBColor(0xf2, 0x8e, 0x2b),
        RGBColor(0xe1, 0x57, 0x59),
        RGBColor(0x76, 0xb7, 0xb2),
        RGBColor(0x59, 0xa1, 0x4f),
        RGBColor(0xed, 0xc9, 0x48),
        RGBColor(0xb0, 0x7a, 0xa1),
    ];
    let bar_w = 140 / methods.len().max(1) as i32;
    for (ti, target) in targets.iter().enumerate() {
        for (mi, method) in methods.iter().enumerate() {
            if let Some(r) = results.get(target, method) {
                let x = left + 160 * ti as i32 + 10 + bar_w * mi as i32;
                root.draw(&Rectangle::new([(x, y(r.tau)), (x + bar_w - 2, y(0.0))], palette[mi % palette.len()].filled()))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    root.present().map_err(|e| e.to_string())
}

/// Writes `results.json`, `results.md`, `tau.svg` and (best effort) `tau.png` into `out`, and
/// prints the table to stdout.
pub fn write_outputs(results: &DemoResults, out: &Path) -> Result<()> {
    eda_core::io::write_json(&out.join("results.json"), results)?;
    let table = results.table();
    eda_core::io::atomic_write(&out.join("results.md"), table.as_bytes())?;
    eda_core::io::atomic_write(&out.join("tau.svg"), tau_svg(results).as_bytes())?;
    if let Err(e) = tau_png(results, &out.join("tau.png")) {
        tracing::warn!(error = %e, "could not draw tau.png (tau.svg is written)");
    }
    println!("{table}");
    println!("artefacts: {}", out.display());
    Ok(())
}
