//! A report rendered: a table with sparklines for a person (80 columns, no colour), and a
//! self-contained SVG chart.

use std::fmt::Write as _;

use chrono::{DateTime, Local};

use super::{Counts, History};

/// The widest a sparkline gets; longer series are summed into this many columns.
const SPARK_WIDTH: usize = 40;

const TICKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The table.
pub fn text(history: &History) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "php-relaunch report, {} to {}, by {} ({} files, {} lines skipped)",
        short(history.since),
        short(history.until),
        history.by,
        history.files.len(),
        history.skipped
    );
    for cut in &history.cut {
        let _ = writeln!(
            out,
            "not read to its end: {}: {}",
            cut.file.display(),
            cut.why
        );
    }
    if !history.owned_by_others.is_empty() {
        let names: Vec<String> = history
            .owned_by_others
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let _ = writeln!(
            out,
            "owned by other users, who can add or change lines (their counts are claims): {}",
            names.join(", ")
        );
    }
    let t = &history.totals;
    let series = |pick: &dyn Fn(&Counts) -> u64| -> Vec<u64> {
        history.buckets.iter().map(|b| pick(&b.counts)).collect()
    };
    let mut row = |name: &str, total: String, values: Option<Vec<u64>>| {
        let spark = values.map(|v| sparkline(&v)).unwrap_or_default();
        let _ = writeln!(out, "{name:<22}{total:>9}  {spark}");
    };
    row(
        "failed checks",
        t.failed().to_string(),
        Some(series(&Counts::failed)),
    );
    for (verdict, n) in &t.failures {
        let verdict = verdict.clone();
        row(
            &format!("  {verdict}"),
            n.to_string(),
            Some(series(&|c: &Counts| {
                c.failures.get(&verdict).copied().unwrap_or(0)
            })),
        );
    }
    row(
        "relaunches",
        t.relaunches.to_string(),
        Some(series(&|c: &Counts| c.relaunches)),
    );
    row("  healthy after", t.helped.to_string(), None);
    row("  still down after", t.not_helped.to_string(), None);
    row(
        "gave up",
        t.gave_up.to_string(),
        Some(series(&|c: &Counts| c.gave_up)),
    );
    row(
        "runs: hook / cron",
        format!("{} / {}", t.hook_runs, t.cron_runs),
        None,
    );
    if history.visitors {
        row(
            "visitors got 502/504",
            format!("{} / {}", t.visitor_502, t.visitor_504),
            Some(series(&|c: &Counts| c.visitor_502 + c.visitor_504)),
        );
    }
    let i = &history.incidents;
    let _ = writeln!(
        out,
        "incidents: {}, downtime median {}, longest {}",
        i.count,
        duration(i.median_seconds),
        duration(i.longest_seconds)
    );
    per_target(&mut out, history);
    out
}

/// Totals per target, when the log holds more than one (`watch`, #21).
fn per_target(out: &mut String, history: &History) {
    if history.targets.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "per target ({}): failed checks, relaunches (healthy after), gave up",
        history.targets.len()
    );
    for (target, c) in &history.targets {
        let _ = writeln!(
            out,
            "  {target}  {} failed, {} relaunches ({}), {} gave up",
            c.failed(),
            c.relaunches,
            c.helped,
            c.gave_up
        );
    }
}

/// `2026-11-30 14:00`.
fn short(time: DateTime<Local>) -> String {
    time.format("%Y-%m-%d %H:%M").to_string()
}

/// `1h 2m 3s`, `4m 5s`, `6s`.
fn duration(seconds: f64) -> String {
    let total = seconds.round().clamp(0.0, 1e12);
    // The clamp keeps the number in range; whole seconds are all a person needs.
    let total = format!("{total:.0}").parse::<u64>().unwrap_or(0);
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

/// `▁▂▃▅▇` scaled to the series' largest value; a space where it is 0.
pub fn sparkline(values: &[u64]) -> String {
    let per = values.len().div_ceil(SPARK_WIDTH).max(1);
    let columns: Vec<u64> = values.chunks(per).map(|c| c.iter().sum()).collect();
    let max = columns.iter().copied().max().unwrap_or(0);
    columns
        .iter()
        .map(|&v| {
            if v == 0 || max == 0 {
                ' '
            } else {
                let at = (v * 7 / max).min(7);
                TICKS[usize::try_from(at).unwrap_or(7)]
            }
        })
        .collect()
}

/// The chart: 502/504 per bucket as bars, a marker labelled with the number of relaunches on each
/// bucket that had any, local times along the bottom, a legend. Buckets with no line logged are left
/// empty (a gap, not a zero).
pub fn svg(history: &History) -> String {
    let (width, height) = (960.0_f64, 400.0_f64);
    let (left, right, top, bottom) = (60.0, 20.0, 40.0, 70.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let n = history.buckets.len().max(1);
    let slot = plot_w / f64::from(u32::try_from(n).unwrap_or(u32::MAX));
    let values: Vec<u64> = history
        .buckets
        .iter()
        .map(|b| b.counts.bad_gateways(history.visitors))
        .collect();
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let max_f = to_f(max);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">
<rect width="{width}" height="{height}" fill="white"/>
<text x="{left}" y="22" font-size="15">php-relaunch: {} to {}, by {}</text>"#,
        short(history.since),
        short(history.until),
        history.by
    );
    // Axes and the y scale.
    let base = top + plot_h;
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#333"/>
<line x1="{left}" y1="{base}" x2="{}" y2="{base}" stroke="#333"/>
<text x="{}" y="{}" text-anchor="end">{max}</text>
<text x="{}" y="{}" text-anchor="end">0</text>
<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">502/504 per {}</text>"##,
        left + plot_w,
        left - 6.0,
        top + 4.0,
        left - 6.0,
        base + 4.0,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        history.by
    );
    for (i, (bucket, &value)) in history.buckets.iter().zip(&values).enumerate() {
        let x = left + slot * to_f(i as u64);
        if bucket.logged && value > 0 {
            let h = plot_h * to_f(value) / max_f;
            let _ = writeln!(
                out,
                r##"<rect class="bar" x="{:.2}" y="{:.2}" width="{:.2}" height="{h:.2}" fill="#c0392b"><title>{}: {value}</title></rect>"##,
                x + slot * 0.1,
                base - h,
                slot * 0.8,
                short(bucket.start)
            );
        }
        if bucket.counts.relaunches > 0 {
            let cx = x + slot / 2.0;
            let _ = writeln!(
                out,
                r##"<g class="relaunch"><circle cx="{cx:.2}" cy="{}" r="7" fill="#2471a3"/><text x="{cx:.2}" y="{}" text-anchor="middle" fill="white" font-size="9">{}</text></g>"##,
                top - 8.0 + 2.0,
                top - 3.0,
                bucket.counts.relaunches
            );
        }
    }
    // Time labels: about eight along the axis.
    let every = n.div_ceil(8).max(1);
    for (i, bucket) in history.buckets.iter().enumerate().step_by(every) {
        let x = left + slot * to_f(i as u64);
        let label = if history.by == "hour" {
            bucket.start.format("%m-%d %H:%M")
        } else {
            bucket.start.format("%Y-%m-%d")
        };
        let _ = writeln!(
            out,
            r##"<line x1="{x:.2}" y1="{base}" x2="{x:.2}" y2="{}" stroke="#333"/><text x="{x:.2}" y="{}" text-anchor="middle">{label}</text>"##,
            base + 5.0,
            base + 18.0
        );
    }
    let legend_y = height - 18.0;
    let bars = if history.visitors {
        "502/504 visitors got (access logs)"
    } else {
        "checks that got 502/504"
    };
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{}" width="12" height="12" fill="#c0392b"/><text x="{}" y="{legend_y}">{bars}</text>
<circle cx="{}" cy="{}" r="6" fill="#2471a3"/><text x="{}" y="{legend_y}">relaunches (their number)</text>
<text x="{}" y="{legend_y}" text-anchor="end">local time; gaps: nothing logged</text>
</svg>"##,
        legend_y - 10.0,
        left + 18.0,
        left + 306.0,
        legend_y - 4.0,
        left + 318.0,
        width - right
    );
    out
}

/// A count as a coordinate (counts here are far below 2^52).
fn to_f(value: u64) -> f64 {
    f64::from(u32::try_from(value).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_and_fit() {
        assert_eq!(sparkline(&[0, 1, 2, 4, 8]), " ▁▂▄█");
        assert_eq!(sparkline(&[0; 3]), "   ");
        assert_eq!(sparkline(&vec![1; 500]).chars().count(), 39);
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(0.0), "0s");
        assert_eq!(duration(185.0), "3m 5s");
        assert_eq!(duration(3725.4), "1h 2m 5s");
    }
}
