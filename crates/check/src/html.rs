//! A self-contained HTML timeline of a checked history: one lane per process, one bar per
//! operation, the linearization found (or the longest partial one), and the point where
//! the history stops being linearizable. Inline CSS and a few lines of inline JS; nothing
//! is fetched from the network, so the file can be attached to a bug report as it is.
//!
//! The horizontal axis is event order, not time: real histories mix microsecond and
//! second gaps, and a bar must stay wide enough to read whatever its duration. Times are
//! in every bar's tooltip.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::explain::label;
use crate::history::Outcome;
use crate::{Analysis, Verdict};

/// Pixels per event, bounded so that small histories stay readable and large ones
/// stay within a few tens of thousands of pixels.
const EVENT_PX_MAX: usize = 48;
const EVENT_PX_MIN: usize = 8;
const TIMELINE_PX_TARGET: usize = 2400;
const LANE_PX: usize = 26;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:18px;margin:0 0 4px}
.verdict{font-weight:bold;padding:1px 6px;border-radius:3px;color:#fff}
.v-linearizable{background:#2a7d2a}.v-not-linearizable{background:#b22}.v-unknown{background:#888}
.legend span{display:inline-block;margin-right:12px}
.sw{display:inline-block;width:14px;height:10px;vertical-align:middle;margin-right:4px;border:1px solid #555}
.scroll{overflow-x:auto;border:1px solid #ccc;margin:8px 0;position:relative}
.tl{position:relative}
.lane{position:absolute;left:0;height:1px;background:#eee}
.pl{left:0;z-index:3;background:#fafafa;width:56px;font:11px monospace;height:22px;line-height:22px;position:absolute;border-right:1px solid #ddd;padding-left:4px}
.op{position:absolute;height:18px;border:1px solid #4a6fa5;background:#cfe0f5;border-radius:3px;font:11px monospace;
 white-space:nowrap;overflow:hidden;text-overflow:ellipsis;padding:0 3px;box-sizing:border-box;line-height:16px;cursor:default}
.op.fail{background:repeating-linear-gradient(45deg,#eee,#eee 4px,#ddd 4px,#ddd 8px);border-color:#aaa;color:#777}
.op.unknown{background:#f3f3f3;border-style:dashed;border-color:#888}
.op.lin{background:#bfe3bf;border-color:#2a7d2a}
.op.blocked{background:#f7b5b5;border:2px solid #b22;z-index:2}
.op.cand{background:#fcd9a8;border:2px solid #d9822b;z-index:2}
.op.dim{opacity:.35}
.op.hl{outline:2px solid #000}
.op b{display:inline-block;min-width:14px;padding:0 2px;margin-right:3px;background:#2a7d2a;color:#fff;border-radius:2px;text-align:center}
.op.blocked b,.op.cand b{background:#b22}
.cut{position:absolute;top:0;width:0;border-left:2px dashed #b22;z-index:4}
.cutlabel{position:absolute;top:0;font:11px monospace;color:#b22;background:#fff;z-index:4;padding:0 2px}
body.only .op.other{display:none}
pre{background:#f6f6f6;border:1px solid #ddd;padding:8px;overflow-x:auto;font-size:12px}
"#;

const SCRIPT: &str = r#"
document.querySelectorAll('.op').forEach(function(el){
  el.addEventListener('mouseenter',function(){
    var k=el.dataset.key; if(k===undefined)return;
    document.querySelectorAll('.op').forEach(function(o){ if(o.dataset.key===k)o.classList.add('hl'); });
  });
  el.addEventListener('mouseleave',function(){
    document.querySelectorAll('.op.hl').forEach(function(o){o.classList.remove('hl');});
  });
});
var only=document.getElementById('only');
if(only)only.addEventListener('change',function(){document.body.classList.toggle('only',only.checked);});
"#;

/// Renders `a` as one HTML page titled `title` (usually the file name).
pub fn render(title: &str, a: &Analysis) -> String {
    let ops = &a.operations;
    let n_events = a.events.len().max(1);
    let px = (TIMELINE_PX_TARGET / n_events).clamp(EVENT_PX_MIN, EVENT_PX_MAX);
    let left = 64usize;
    let width = left + (n_events + 1) * px;
    let x = |event: usize| left + event * px;

    let mut procs: Vec<u64> = ops.iter().map(|o| o.process).collect();
    procs.sort_unstable();
    procs.dedup();
    let lane: HashMap<u64, usize> = procs.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let height = (procs.len().max(1)) * LANE_PX + 22;

    // Position of each op in the linearization (or partial linearization) to show.
    let mut position: HashMap<usize, usize> = HashMap::new();
    let (mut blocked, mut cands, mut failing_key) = (None, Vec::new(), None);
    if let Some(v) = &a.violation {
        for (n, (g, _)) in v.partial.iter().enumerate() {
            position.insert(*g, n + 1);
        }
        blocked = Some(v.blocked);
        cands = v.candidates.iter().map(|c| c.op).collect();
        failing_key = Some(v.key.clone());
    } else {
        for p in &a.partitions {
            for (n, g) in p.linearization.iter().flatten().enumerate() {
                position.insert(*g, n + 1);
            }
        }
    }

    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body>",
        t = esc(title)
    );
    let verdict = a.verdict.to_string();
    let _ = write!(
        h,
        "<h1>{t} <span class=\"verdict v-{verdict}\">{verdict}</span></h1>\
         <div>{:?} model &middot; {} operations &middot; {} events &middot; {} partition(s) &middot; checked in {:.1} ms</div>",
        a.model,
        ops.len(),
        a.events.len(),
        a.partitions.len(),
        a.elapsed.as_secs_f64() * 1e3,
        t = esc(title)
    );
    let by_verdict = a.partitions.iter().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(p.verdict.to_string()).or_insert(0usize) += 1;
        m
    });
    if a.partitions.len() > 1 {
        let s: Vec<String> = by_verdict.iter().map(|(v, n)| format!("{n} {v}")).collect();
        let _ = write!(h, "<div>partitions: {}</div>", esc(&s.join(", ")));
    }
    if let Some(note) = &a.note {
        let _ = write!(h, "<p>{}</p>", esc(note));
    }
    let _ = write!(
        h,
        "<div class=\"legend\"><span><i class=\"sw\" style=\"background:#bfe3bf\"></i>{}</span>\
         <span><i class=\"sw\" style=\"background:#cfe0f5\"></i>ok</span>\
         <span><i class=\"sw\" style=\"background:#f3f3f3;border-style:dashed\"></i>outcome unknown (may take effect any time after its call, or never)</span>\
         <span><i class=\"sw\" style=\"background:#eee\"></i>failed (no effect)</span>",
        if a.violation.is_some() { "in the longest partial linearization (number = its position)" } else { "linearization position" }
    );
    if a.violation.is_some() {
        let _ = write!(
            h,
            "<span><i class=\"sw\" style=\"background:#f7b5b5\"></i>had to take effect, could not</span>\
             <span><i class=\"sw\" style=\"background:#fcd9a8\"></i>could not go next either</span>"
        );
    }
    h.push_str("</div>");
    if matches!(&failing_key, Some(Some(_))) {
        h.push_str("<label><input type=\"checkbox\" id=\"only\"> show only the failing key</label>");
    }

    let _ = write!(h, "<div class=\"scroll\"><div class=\"tl\" style=\"width:{width}px;height:{height}px\">");
    for (i, p) in procs.iter().enumerate() {
        let y = 18 + i * LANE_PX;
        let _ = write!(
            h,
            "<div class=\"lane\" style=\"top:{}px;width:{width}px\"></div><div class=\"pl\" style=\"top:{}px\">p{p}</div>",
            y + 11,
            y
        );
    }
    for op in ops {
        let start = x(op.invoke_event);
        let end = match (op.outcome, op.complete_event) {
            (Outcome::Unknown, _) | (_, None) => width - px / 2,
            (_, Some(c)) => x(c),
        };
        let w = (end.saturating_sub(start)).max(px / 2 + 4);
        let y = 18 + lane[&op.process] * LANE_PX + 2;
        let mut class = vec!["op"];
        match op.outcome {
            Outcome::Fail => class.push("fail"),
            Outcome::Unknown => class.push("unknown"),
            Outcome::Ok => {}
        }
        if position.contains_key(&op.index) {
            class.push("lin");
        }
        if Some(op.index) == blocked {
            class.push("blocked");
        } else if cands.contains(&op.index) {
            class.push("cand");
        }
        if let Some(k) = &failing_key {
            if a.model == crate::ModelKind::Kv && op.key != *k {
                class.push("dim");
                class.push("other");
            }
        }
        let lbl = label(a.model, op);
        let tip = format!(
            "#{} p{} {}\ninvoked t={}{}",
            op.index,
            op.process,
            lbl,
            op.call,
            match op.completed {
                Some(c) => format!(", completed t={c}"),
                None => ", never completed".into(),
            }
        );
        let badge = match position.get(&op.index) {
            Some(n) => format!("<b>{n}</b>"),
            None if Some(op.index) == blocked || cands.contains(&op.index) => "<b>!</b>".into(),
            None => String::new(),
        };
        let key_attr = match &op.key {
            Some(k) => format!(" data-key=\"{}\"", esc(k)),
            None => String::new(),
        };
        let _ = write!(
            h,
            "<div class=\"{}\"{key_attr} style=\"left:{start}px;top:{y}px;width:{w}px\" title=\"{}\">{badge}{}</div>",
            class.join(" "),
            esc(&tip),
            esc(&lbl)
        );
    }
    if let Some(t) = a.violation.as_ref().and_then(|v| v.cut) {
        let e = a.events.iter().rposition(|ev| ev.time <= t).unwrap_or(0);
        let cx = x(e) + px / 2;
        let _ = write!(
            h,
            "<div class=\"cut\" style=\"left:{cx}px;height:{height}px\"></div>\
             <div class=\"cutlabel\" style=\"left:{}px\">not linearizable from here (t={t})</div>",
            cx + 3
        );
    }
    h.push_str("</div></div>");

    match a.verdict {
        Verdict::NotLinearizable => {
            let _ = write!(h, "<h2>Why</h2><pre>{}</pre>", esc(&a.explain_text()));
        }
        Verdict::Linearizable => {
            h.push_str("<p>Numbers on the bars give a linearization: the order in which the operations can take effect");
            if a.partitions.len() > 1 {
                h.push_str(" (per key)");
            }
            h.push_str(".</p>");
        }
        Verdict::Unknown => {}
    }
    let _ = writeln!(h, "<script>{SCRIPT}</script></body></html>");
    h
}
