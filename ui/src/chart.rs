//! The overview's chart: completions and failures per minute over the last
//! hour, drawn on the server as SVG (no chart script in the browser).

use duroxide_pg::dashboard::ActivityBucket;
use maud::{Markup, html};

const W: u64 = 720;
const H: u64 = 160;

/// Bars for `buckets` of `bucket_ms` from `since_ms`, `n` buckets wide:
/// completions up (green), failures stacked on them (red).
pub(crate) fn activity(
    buckets: &[ActivityBucket],
    since_ms: u64,
    bucket_ms: u64,
    n: u64,
) -> Markup {
    let mut counts = vec![(0u64, 0u64); n as usize];
    for b in buckets {
        let i = b.start_ms.saturating_sub(since_ms) / bucket_ms.max(1);
        if let Some(slot) = counts.get_mut(i as usize) {
            *slot = (slot.0 + b.completed, slot.1 + b.failed);
        }
    }
    let peak = counts.iter().map(|(c, f)| c + f).max().unwrap_or(0).max(1);
    let bar = W / n.max(1);
    let total: (u64, u64) = counts.iter().fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
    html! {
        figure.chart {
            svg #activity-chart viewBox={ "0 0 " (W) " " (H + 20) } width="100%" role="img"
                aria-label={ "Completions and failures per minute: " (total.0) " completed, " (total.1) " failed in the last hour" } {
                line x1="0" y1=(H) x2=(W) y2=(H) class="axis" {}
                @for (i, (c, f)) in counts.iter().enumerate() {
                    @let x = i as u64 * bar;
                    @let hc = c * H / peak;
                    @let hf = f * H / peak;
                    @if *c > 0 {
                        rect class="completed" x=(x) y=(H - hc) width=(bar.saturating_sub(1)) height=(hc) {
                            title { (c) " completed, minute " (i + 1) }
                        }
                    }
                    @if *f > 0 {
                        rect class="failed" x=(x) y=(H - hc - hf) width=(bar.saturating_sub(1)) height=(hf) {
                            title { (f) " failed, minute " (i + 1) }
                        }
                    }
                }
                text x="0" y=(H + 16) class="label" { "-60 min" }
                text x=(W) y=(H + 16) class="label end" { "now" }
                text x="4" y="12" class="label" { "peak " (peak) "/min" }
            }
            figcaption {
                span.completed-key { "■" } " completed " strong #completed-hour { (total.0) }
                " · "
                span.failed-key { "■" } " failed " strong #failed-hour { (total.1) }
                " in the last hour"
            }
        }
    }
}
