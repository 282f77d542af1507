//! The bar chart of `bench --peers` (`docs/bench.svg`): one panel per scenario, one bar per
//! server, each the best round's requests per second, drawn with plotters' SVG backend.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::servers::Peer;

/// One scenario's bars, top to bottom.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub bars: Vec<(Peer, f64)>,
}

const WIDTH: u32 = 900;
const BAR: u32 = 26;
const PANEL_EXTRA: u32 = 62;

fn color(peer: Peer) -> RGBColor {
    match peer {
        Peer::Ceiling => RGBColor(140, 140, 140),
        Peer::BareHyper => RGBColor(230, 145, 40),
        Peer::Nginx => RGBColor(60, 150, 70),
        Peer::Apache => RGBColor(200, 60, 60),
        Peer::Classic => RGBColor(60, 110, 200),
        Peer::WorkerConnections => RGBColor(30, 50, 120),
    }
}

/// Short figure: `118.9k`, `640`.
pub fn human(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.1}k", value / 1000.0)
    } else if value >= 1000.0 {
        format!("{:.2}k", value / 1000.0)
    } else {
        format!("{value:.0}")
    }
}

/// An axis figure: `0`, `2.5k`, `100k`.
fn axis(value: f64) -> String {
    if value >= 1000.0 {
        let k = value / 1000.0;
        if k.fract().abs() < 1e-9 { format!("{k:.0}k") } else { format!("{k:.1}k") }
    } else {
        format!("{value:.0}")
    }
}

/// Draws `panels` one under the other into an SVG file at `path`.
pub fn draw(path: &Path, title: &str, panels: &[Panel]) -> Result<()> {
    let height = 40 + panels.iter().map(|p| PANEL_EXTRA + BAR * p.bars.len() as u32).sum::<u32>();
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (head, mut rest) = root.split_vertically(40);
    head.draw_text(
        title,
        &TextStyle::from(("sans-serif", 18).into_font()).pos(Pos::new(HPos::Center, VPos::Center)),
        (WIDTH as i32 / 2, 20),
    )
    .map_err(|e| anyhow!("{e}"))?;
    for panel in panels {
        let n = panel.bars.len();
        let (area, below) = rest.split_vertically(PANEL_EXTRA + BAR * n as u32);
        rest = below;
        let max = panel.bars.iter().map(|(_, v)| *v).fold(1.0, f64::max) * 1.15;
        let names: Vec<&str> = panel.bars.iter().map(|(peer, _)| peer.short()).collect();
        // Segment 0 is at the bottom: the first bar goes in the top segment.
        let segment = |i: usize| n - 1 - i;
        let mut chart = ChartBuilder::on(&area)
            .caption(&panel.title, ("sans-serif", 15))
            .margin(8)
            .margin_right(30)
            .x_label_area_size(20)
            .y_label_area_size(160)
            .build_cartesian_2d(0f64..max, (0..n).into_segmented())
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_labels(6)
            .light_line_style(WHITE)
            .y_labels(n)
            .x_label_formatter(&|x| axis(*x))
            .y_label_formatter(&|y| match y {
                SegmentValue::CenterOf(i) if *i < n => names[n - 1 - *i].to_owned(),
                _ => String::new(),
            })
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(panel.bars.iter().enumerate().map(|(i, (peer, value))| {
                let mut bar = Rectangle::new(
                    [(0.0, SegmentValue::Exact(segment(i))), (*value, SegmentValue::Exact(segment(i) + 1))],
                    color(*peer).filled(),
                );
                bar.set_margin(4, 4, 0, 0);
                bar
            }))
            .map_err(|e| anyhow!("{e}"))?;
        let label = TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        chart
            .draw_series(panel.bars.iter().enumerate().map(|(i, (_, value))| {
                Text::new(format!(" {}", human(*value)), (*value, SegmentValue::CenterOf(segment(i))), label.clone())
            }))
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
