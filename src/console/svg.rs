//! Charts as server-rendered SVG: bars with their figures, no script, no style attribute
//! (colours come from the console's stylesheet through classes). Every chart has a title
//! for screen readers; the pages give the figures as a table too.

use quick_xml::escape::escape;
use std::fmt::Write;

/// One bar: its label and value.
pub type Bar = (String, u64);

const ROW: u32 = 26;
const LABEL_W: u32 = 230;
const BAR_W: u32 = 420;

/// Horizontal bars, one row each, labelled on the left, the figure after the bar.
pub fn bars(title: &str, data: &[Bar]) -> String {
    let max = data.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let height = ROW * u32::try_from(data.len().max(1)).unwrap_or(u32::MAX / ROW);
    let width = LABEL_W + BAR_W + 90;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
        escape(title)
    );
    for (i, (label, value)) in data.iter().enumerate() {
        let y = ROW * u32::try_from(i).unwrap_or(0);
        let w = (u64::from(BAR_W) * value / max) as u32;
        let _ = write!(
            out,
            r#"<text class="label" x="{}" y="{}" text-anchor="end">{}</text><rect class="bar" x="{LABEL_W}" y="{}" width="{w}" height="{}"/><text class="figure" x="{}" y="{}">{value}</text>"#,
            LABEL_W - 8,
            y + 17,
            escape(label.as_str()),
            y + 4,
            ROW - 8,
            LABEL_W + w + 6,
            y + 17,
        );
    }
    out.push_str("</svg>");
    out
}

/// Vertical columns over a sequence (days, hours of the day), a label under every
/// `label_every`-th column.
pub fn columns(title: &str, data: &[Bar], label_every: usize) -> String {
    let n = u32::try_from(data.len().max(1)).unwrap_or(1);
    let col = (720 / n).clamp(8, 60);
    let (top, plot, bottom) = (18u32, 160u32, 34u32);
    let width = col * n + 20;
    let height = top + plot + bottom;
    let max = data.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{}</title><line class="axis" x1="10" y1="{}" x2="{}" y2="{}"/>"#,
        escape(title),
        top + plot,
        width - 10,
        top + plot
    );
    for (i, (label, value)) in data.iter().enumerate() {
        let i32_ = u32::try_from(i).unwrap_or(0);
        let h = (u64::from(plot) * value / max) as u32;
        let x = 10 + col * i32_;
        let _ = write!(
            out,
            r#"<rect class="bar" x="{}" y="{}" width="{}" height="{h}"><title>{}: {value}</title></rect>"#,
            x + 1,
            top + plot - h,
            col.saturating_sub(2).max(1),
            escape(label.as_str()),
        );
        if *value == max {
            let _ = write!(
                out,
                r#"<text class="figure" x="{}" y="{}" text-anchor="middle">{value}</text>"#,
                x + col / 2,
                top + plot - h - 4
            );
        }
        if label_every > 0 && i % label_every == 0 {
            let _ = write!(
                out,
                r#"<text class="label" x="{}" y="{}" text-anchor="middle">{}</text>"#,
                x + col / 2,
                top + plot + 16,
                escape(label.as_str())
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_bars_scale_to_the_largest() {
        let svg = bars("Outcomes", &[("a<b".into(), 10), ("c".into(), 5)]);
        assert!(svg.contains("a&lt;b"));
        assert!(svg.contains(r#"width="420""#));
        assert!(svg.contains(r#"width="210""#));
        assert!(svg.contains("<title>Outcomes</title>"));
        let cols = columns("Per day", &[("Mon".into(), 0), ("Tue".into(), 4)], 1);
        assert!(cols.contains("<title>Tue: 4</title>"));
    }
}
