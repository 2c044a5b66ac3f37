//! `rfx-bench report DIR`: reads the result files `rfx-bench all --json DIR`
//! wrote and writes `DIR/report.md` (plots in `DIR/plots/*.svg`) and a
//! self-contained `DIR/report.html` (the same plots inline): every rfx
//! figure next to its baseline with the ratio, and the goals of `docs/design.md`
//! marked met or missed.

pub mod csv;
pub mod goals;
pub mod plot;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use goals::Results;
use plot::{Bar, Series};

/// Arguments of `rfx-bench report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The directory of result files (`rfx-bench all --json DIR`).
    #[arg(default_value = "out")]
    pub dir: PathBuf,
}

/// A piece of the report.
#[derive(Debug)]
enum Block {
    Heading(u8, String),
    Para(String),
    Table(Vec<String>, Vec<Vec<String>>),
    Figure {
        file: String,
        svg: String,
        caption: String,
    },
}

/// The report being built.
#[derive(Debug, Default)]
struct Doc(Vec<Block>);

impl Doc {
    fn h(&mut self, level: u8, text: impl Into<String>) {
        self.0.push(Block::Heading(level, text.into()));
    }
    fn p(&mut self, text: impl Into<String>) {
        self.0.push(Block::Para(text.into()));
    }
    fn table(&mut self, head: &[&str], rows: Vec<Vec<String>>) {
        if !rows.is_empty() {
            self.0.push(Block::Table(
                head.iter().map(|s| s.to_string()).collect(),
                rows,
            ));
        }
    }
    fn figure(&mut self, file: &str, svg: anyhow::Result<String>, caption: impl Into<String>) {
        match svg {
            Ok(svg) => self.0.push(Block::Figure {
                file: file.to_string(),
                svg,
                caption: caption.into(),
            }),
            Err(e) => self.p(format!("(plot {file} failed: {e:#})")),
        }
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        for b in &self.0 {
            match b {
                Block::Heading(l, t) => {
                    out.push_str(&format!("{} {t}\n\n", "#".repeat(usize::from(*l))))
                }
                Block::Para(t) => out.push_str(&format!("{t}\n\n")),
                Block::Table(head, rows) => {
                    let cell = |s: &String| s.replace('|', "\\|");
                    out.push_str(&format!(
                        "| {} |\n|{}|\n",
                        head.iter().map(cell).collect::<Vec<_>>().join(" | "),
                        head.iter().map(|_| "---").collect::<Vec<_>>().join("|")
                    ));
                    for r in rows {
                        out.push_str(&format!(
                            "| {} |\n",
                            r.iter().map(cell).collect::<Vec<_>>().join(" | ")
                        ));
                    }
                    out.push('\n');
                }
                Block::Figure { file, caption, .. } => {
                    out.push_str(&format!("![{caption}](plots/{file})\n\n*{caption}*\n\n"))
                }
            }
        }
        out
    }

    fn html(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let mut out = String::from(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>rfx benchmark report</title>\n\
             <style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}\
             table{border-collapse:collapse;font-size:13px;margin:1em 0}\
             td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}\
             th{background:#eee}figure{margin:1em 0}figcaption{font-style:italic}\
             .met{color:#1a7f37;font-weight:bold}.missed{color:#cf222e;font-weight:bold}</style>\n\
             </head><body>\n",
        );
        for b in &self.0 {
            match b {
                Block::Heading(l, t) => out.push_str(&format!("<h{l}>{}</h{l}>\n", esc(t))),
                Block::Para(t) => out.push_str(&format!("<p>{}</p>\n", esc(t))),
                Block::Table(head, rows) => {
                    out.push_str("<table><tr>");
                    for h in head {
                        out.push_str(&format!("<th>{}</th>", esc(h)));
                    }
                    out.push_str("</tr>\n");
                    for r in rows {
                        out.push_str("<tr>");
                        for c in r {
                            let class = match c.as_str() {
                                "met" => " class=\"met\"",
                                "missed" => " class=\"missed\"",
                                _ => "",
                            };
                            out.push_str(&format!("<td{class}>{}</td>", esc(c)));
                        }
                        out.push_str("</tr>\n");
                    }
                    out.push_str("</table>\n");
                }
                Block::Figure { svg, caption, .. } => out.push_str(&format!(
                    "<figure>{svg}<figcaption>{}</figcaption></figure>\n",
                    esc(caption)
                )),
            }
        }
        out.push_str("</body></html>\n");
        out
    }
}

fn load(dir: &Path, name: &str) -> anyhow::Result<Option<Value>> {
    let p = dir.join(name);
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let v = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    Ok(Some(v))
}

/// Loads the result files of `dir` (absent ones are `None`).
pub fn load_dir(dir: &Path) -> anyhow::Result<Results> {
    Ok(Results {
        transport: load(dir, "transport.json")?,
        invoke: load(dir, "invoke.json")?,
        throughput: load(dir, "throughput.json")?,
        cold_start: load(dir, "cold-start.json")?,
        coll: load(dir, "coll.json")?,
        sockperf: load(dir, "sockperf.json")?,
        all: load(dir, "all.json")?,
    })
}

fn arr<'a>(v: Option<&'a Value>, key: &str) -> Vec<&'a Value> {
    v.and_then(|v| v.get(key))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64)
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// A number with 2 decimals (3 below 1), or `-`.
fn f(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() && x.abs() < 1.0 => format!("{x:.3}"),
        Some(x) if x.is_finite() => format!("{x:.2}"),
        _ => "-".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The `(quantile, µs)` points of a summary's CDF.
fn cdf(summary: Option<&Value>) -> Vec<(f64, f64)> {
    summary
        .and_then(|s| s.get("cdf_us"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Distinct values of `key` in rows, in order of first appearance.
fn distinct(rows: &[&Value], key: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        let v = s(r, key).to_string();
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn baseline_short(kind: &str) -> &'static str {
    match kind {
        "shm" => "raw shm",
        "tcp" => "raw tcp",
        "ofi" => "fi_pingpong",
        "verbs" => "ib_write_lat",
        _ => "baseline",
    }
}

fn machine_section(doc: &mut Doc, r: &Results) {
    let m = [
        &r.all,
        &r.transport,
        &r.invoke,
        &r.throughput,
        &r.cold_start,
        &r.coll,
    ]
    .into_iter()
    .flatten()
    .find_map(|v| v.get("machine"));
    let Some(m) = m.and_then(Value::as_object) else {
        return;
    };
    let rows = m
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            vec![k.clone(), v]
        })
        .collect();
    doc.h(2, "Machine and build");
    doc.table(&["", ""], rows);
}

fn run_section(doc: &mut Doc, r: &Results) {
    let Some(all) = r.all.as_ref() else {
        return;
    };
    doc.h(2, "Run");
    if let Some(t) = n(all, "/elapsed_s") {
        doc.p(format!("`rfx-bench all` took {t:.0} s."));
    }
    let steps = arr(Some(all), "steps")
        .into_iter()
        .map(|x| {
            vec![
                s(x, "name").to_string(),
                s(x, "status").to_string(),
                f(n(x, "/seconds")),
                s(x, "note").to_string(),
            ]
        })
        .collect();
    doc.table(&["step", "status", "seconds", "note"], steps);
    let base = arr(Some(all), "baselines")
        .into_iter()
        .map(|x| {
            let found = x.get("found").and_then(Value::as_bool) == Some(true);
            vec![
                s(x, "name").to_string(),
                if found { "found" } else { "missing" }.to_string(),
                s(x, "note").to_string(),
            ]
        })
        .collect();
    doc.h(3, "Baselines");
    doc.table(&["baseline", "", "note"], base);
}

fn goals_section(doc: &mut Doc, r: &Results) {
    doc.h(2, "Performance goals (docs/design.md)");
    let rows = goals::evaluate(r)
        .into_iter()
        .map(|v| vec![v.goal, v.measured, v.status.label().to_string(), v.why])
        .collect();
    doc.table(&["goal", "measured", "status", "why (where known)"], rows);
}

fn transport_section(doc: &mut Doc, r: &Results) {
    let rows = arr(r.transport.as_ref(), "results");
    if rows.is_empty() {
        return;
    }
    let sock = arr(r.sockperf.as_ref(), "results");
    doc.h(2, "Transport round trip");
    doc.p(
        "write_imm round trip (write, the peer's completion, its write_imm back, our completion) \
         per provider, size and polling mode (hot: busy poll; warm: blocking), against the raw \
         baseline of the same provider measured in the same run with the same CPUs and mode \
         (raw TCP socket, raw shared-memory flag ping-pong, fi_pingpong for ofi), and sockperf \
         for tcp where installed (hot: --nonblocked; warm: blocking). µs; x = rfx p50 / baseline p50.",
    );
    for kind in distinct(&rows, "transport") {
        let kr: Vec<&Value> = rows
            .iter()
            .copied()
            .filter(|x| s(x, "transport") == kind)
            .collect();
        let base = baseline_short(&kind);
        let mut series = Vec::new();
        let mut cdfs = Vec::new();
        for mode in distinct(&kr, "mode") {
            let mr: Vec<&Value> = kr
                .iter()
                .copied()
                .filter(|x| s(x, "mode") == mode)
                .collect();
            let pts = |which: &str| -> Vec<(f64, f64)> {
                mr.iter()
                    .filter_map(|x| Some((u(x, "size") as f64, n(x, &format!("/{which}/p50_us"))?)))
                    .collect()
            };
            series.push(Series::new(format!("rfx {mode}"), pts("rfx")));
            series.push(Series::new(format!("{base} {mode}"), pts("raw")));
            if let Some(first) = mr.first() {
                let size = u(first, "size");
                cdfs.push(Series::new(
                    format!("rfx {mode} {size} B"),
                    cdf(first.get("rfx")),
                ));
                let c = cdf(first.get("raw"));
                if !c.is_empty() {
                    cdfs.push(Series::new(format!("{base} {mode} {size} B"), c));
                }
            }
            if kind == "tcp" {
                let sp: Vec<&Value> = sock
                    .iter()
                    .copied()
                    .filter(|x| s(x, "mode") == mode)
                    .collect();
                if !sp.is_empty() {
                    series.push(Series::new(
                        format!("sockperf {mode}"),
                        sp.iter()
                            .filter_map(|x| Some((u(x, "size") as f64, n(x, "/sockperf/p50_us")?)))
                            .collect(),
                    ));
                    if let Some(first) = sp.first() {
                        cdfs.push(Series::new(
                            format!("sockperf {mode} {} B", u(first, "size")),
                            cdf(first.get("sockperf")),
                        ));
                    }
                }
            }
        }
        doc.h(3, kind.clone());
        doc.figure(
            &format!("transport-{kind}.svg"),
            plot::latency_vs_size(&format!("{kind}: round trip p50 vs size"), &series),
            format!("{kind}: rfx write_imm round trip p50 against {base}, hot and warm"),
        );
        doc.figure(
            &format!("cdf-transport-{kind}.svg"),
            plot::percentiles(&format!("{kind}: round-trip latency by percentile"), &cdfs),
            format!("{kind}: latency CDF (percentile plot) at the smallest size"),
        );
        let mut head = vec![
            "mode",
            "size",
            "rfx p50",
            "p99",
            "p999",
            "max",
            "baseline p50",
            "p99",
            "x p50",
        ];
        if kind == "tcp" && !sock.is_empty() {
            head.extend(["sockperf p50", "x sockperf"]);
        }
        let table = kr
            .iter()
            .map(|x| {
                let rfx = n(x, "/rfx/p50_us");
                let raw = n(x, "/raw/p50_us");
                let mut row = vec![
                    s(x, "mode").to_string(),
                    u(x, "size").to_string(),
                    f(rfx),
                    f(n(x, "/rfx/p99_us")),
                    f(n(x, "/rfx/p999_us")),
                    f(n(x, "/rfx/max_us")),
                    f(raw),
                    f(n(x, "/raw/p99_us")),
                    f(ratio(rfx, raw)),
                ];
                if kind == "tcp" && !sock.is_empty() {
                    let sp = goals::sockperf_p50(r, s(x, "mode"), u(x, "size"));
                    row.extend([f(sp), f(ratio(rfx, sp))]);
                }
                row
            })
            .collect();
        doc.table(&head, table);
    }
}

fn invoke_section(doc: &mut Doc, r: &Results) {
    let rows = arr(r.invoke.as_ref(), "results");
    if rows.is_empty() {
        return;
    }
    doc.h(2, "Invocation round trip");
    doc.p(
        "invoke() of noop and echo through an in-process executor (one worker pinned to the \
         other CPU) against rfx's own write_imm round trip of the same size measured in the same \
         run (x rt), and the raw baseline of the transport benchmark (x raw). µs.",
    );
    for kind in distinct(&rows, "transport") {
        let kr: Vec<&Value> = rows
            .iter()
            .copied()
            .filter(|x| s(x, "transport") == kind)
            .collect();
        let base = baseline_short(&kind);
        let mut series = Vec::new();
        let mut cdfs = Vec::new();
        for mode in distinct(&kr, "mode") {
            let mr: Vec<&Value> = kr
                .iter()
                .copied()
                .filter(|x| s(x, "mode") == mode)
                .collect();
            for function in distinct(&mr, "function") {
                if mode != "hot" && function != "noop" {
                    continue;
                }
                let fr: Vec<&Value> = mr
                    .iter()
                    .copied()
                    .filter(|x| s(x, "function") == function)
                    .collect();
                series.push(Series::new(
                    format!("{function} {mode}"),
                    fr.iter()
                        .filter_map(|x| Some((u(x, "size") as f64, n(x, "/invoke/p50_us")?)))
                        .collect(),
                ));
                if function == "noop" {
                    series.push(Series::new(
                        format!("rfx write_imm {mode}"),
                        fr.iter()
                            .filter_map(|x| {
                                Some((u(x, "size") as f64, n(x, "/transport_pingpong/p50_us")?))
                            })
                            .collect(),
                    ));
                    if let Some(first) = fr.first() {
                        let size = u(first, "size");
                        cdfs.push(Series::new(
                            format!("noop {mode} {size} B"),
                            cdf(first.get("invoke")),
                        ));
                        cdfs.push(Series::new(
                            format!("rfx write_imm {mode} {size} B"),
                            cdf(first.get("transport_pingpong")),
                        ));
                    }
                }
            }
            if mode == "hot" {
                let raw: Vec<(f64, f64)> = mr
                    .iter()
                    .filter(|x| s(x, "function") == "noop")
                    .filter_map(|x| {
                        let size = u(x, "size");
                        Some((
                            size as f64,
                            goals::transport_p50(r, &kind, "hot", size, "raw")?,
                        ))
                    })
                    .collect();
                if !raw.is_empty() {
                    series.push(Series::new(format!("{base} hot (transport run)"), raw));
                }
            }
        }
        doc.h(3, kind.to_string());
        doc.figure(
            &format!("invoke-{kind}.svg"),
            plot::latency_vs_size(
                &format!("{kind}: invocation round trip p50 vs size"),
                &series,
            ),
            format!(
                "{kind}: noop and echo invocations against rfx's write_imm round trip and {base}"
            ),
        );
        doc.figure(
            &format!("cdf-invoke-{kind}.svg"),
            plot::percentiles(
                &format!("{kind}: noop invocation latency by percentile"),
                &cdfs,
            ),
            format!("{kind}: noop invocation latency CDF at the smallest size"),
        );
        let table = kr
            .iter()
            .map(|x| {
                let inv = n(x, "/invoke/p50_us");
                let raw = goals::transport_p50(r, &kind, s(x, "mode"), u(x, "size"), "raw");
                vec![
                    s(x, "mode").to_string(),
                    s(x, "function").to_string(),
                    u(x, "size").to_string(),
                    f(inv),
                    f(n(x, "/invoke/p99_us")),
                    f(n(x, "/invoke/p999_us")),
                    f(n(x, "/transport_pingpong/p50_us")),
                    f(n(x, "/ratio_p50")),
                    f(raw),
                    f(ratio(inv, raw)),
                ]
            })
            .collect();
        doc.table(
            &[
                "mode",
                "function",
                "size",
                "invoke p50",
                "p99",
                "p999",
                "rt p50",
                "x rt",
                "raw p50",
                "x raw",
            ],
            table,
        );
    }
}

fn throughput_section(doc: &mut Doc, r: &Results) {
    let rows = arr(r.throughput.as_ref(), "results");
    if rows.is_empty() {
        return;
    }
    doc.h(2, "Throughput");
    doc.p(format!(
        "Pipelined noop invocations per second: N client threads, each with its own connection \
         to one of the N workers of an in-process executor, {} in flight per client; \
         latency = submit to result of one invocation in 16.",
        rows.first().map_or(0, |x| u(x, "depth"))
    ));
    let series: Vec<Series> = distinct(&rows, "transport")
        .into_iter()
        .map(|k| {
            let pts = rows
                .iter()
                .filter(|x| s(x, "transport") == k)
                .filter_map(|x| Some((u(x, "threads") as f64, n(x, "/invocations_per_s")?)))
                .collect();
            Series::new(k, pts)
        })
        .collect();
    let goal = r
        .throughput
        .as_ref()
        .and_then(|t| n(t, "/goal_per_s"))
        .unwrap_or(2e6);
    doc.figure(
        "throughput.svg",
        plot::throughput("no-op invocations/s vs client threads", &series, goal),
        "throughput against client threads, per transport",
    );
    let table = rows
        .iter()
        .map(|x| {
            let over = x.get("oversubscribed").and_then(Value::as_bool) == Some(true);
            vec![
                s(x, "transport").to_string(),
                s(x, "mode").to_string(),
                u(x, "threads").to_string(),
                n(x, "/invocations_per_s").map_or("-".into(), |v| format!("{v:.0}")),
                f(n(x, "/latency/p50_us")),
                f(n(x, "/latency/p99_us")),
                f(n(x, "/latency/p999_us")),
                if over {
                    "client and executor threads share the CPUs"
                } else {
                    ""
                }
                .to_string(),
            ]
        })
        .collect();
    doc.table(
        &[
            "transport",
            "mode",
            "threads",
            "invocations/s",
            "lat p50",
            "p99",
            "p999",
            "note",
        ],
        table,
    );
}

fn cold_start_section(doc: &mut Doc, r: &Results) {
    let Some(cs) = r.cold_start.as_ref() else {
        return;
    };
    let rows = arr(Some(cs), "results");
    let chain = s(cs, "chain");
    doc.h(2, "Cold start");
    doc.p(format!(
        "From nothing to the first noop result ({chain} chain), per phase, p50 in ms, against \
         the floor of spawning a trivial process in the same run."
    ));
    let mut bars = Vec::new();
    let mut table = Vec::new();
    for x in &rows {
        let kind = s(x, "transport");
        let phases: Vec<String> = x
            .get("phases")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut segs = Vec::new();
        for p in &phases {
            let Some(sp) = x.get(p.as_str()) else {
                continue;
            };
            if p != "total" {
                segs.push((p.clone(), n(sp, "/p50_us").unwrap_or(0.0) / 1e3));
            }
            let ms = |k: &str| n(sp, k).map(|v| v / 1e3);
            table.push(vec![
                kind.to_string(),
                p.clone(),
                f(ms("/p50_us")),
                f(ms("/p90_us")),
                f(ms("/p99_us")),
                f(ms("/max_us")),
            ]);
        }
        bars.push(Bar {
            label: format!("{chain} {kind}"),
            segments: segs,
        });
    }
    for fl in arr(Some(cs), "floor") {
        let what = s(fl, "what");
        let ms = |k: &str| n(fl, &format!("/spread/{k}")).map(|v| v / 1e3);
        bars.push(Bar {
            label: what.split(" (").next().unwrap_or(what).to_string(),
            segments: vec![("process spawn (floor)".into(), ms("p50_us").unwrap_or(0.0))],
        });
        table.push(vec![
            "floor".into(),
            what.to_string(),
            f(ms("p50_us")),
            f(ms("p90_us")),
            f(ms("p99_us")),
            f(ms("max_us")),
        ]);
    }
    doc.figure(
        "cold-start.svg",
        plot::stacked_bars("cold start breakdown (p50 per phase)", "ms", &bars),
        "cold-start phases (p50 of each) per transport, and the process-spawn floor",
    );
    doc.table(
        &["transport", "phase", "p50 ms", "p90", "p99", "max"],
        table,
    );
}

fn coll_section(doc: &mut Doc, r: &Results) {
    let rows = arr(r.coll.as_ref(), "rows");
    if rows.is_empty() {
        return;
    }
    doc.h(2, "Collectives");
    doc.p(
        "OSU-style: per operation and size, warm-up, a barrier, then back-to-back calls timed as \
         one block on every rank; the figure is the mean over ranks of block / calls, µs. Open \
         MPI (bench/mpi/coll_lat.c, vader) runs the same method in the same run. x = rfx / MPI.",
    );
    let mut ranks: Vec<u64> = rows.iter().map(|x| u(x, "ranks")).collect();
    ranks.sort_unstable();
    ranks.dedup();
    for nr in ranks {
        let rr: Vec<&Value> = rows
            .iter()
            .copied()
            .filter(|x| u(x, "ranks") == nr)
            .collect();
        let panels: Vec<(String, Vec<Series>)> = distinct(&rr, "op")
            .into_iter()
            .filter(|op| op != "barrier")
            .map(|op| {
                let or: Vec<&Value> = rr.iter().copied().filter(|x| s(x, "op") == op).collect();
                let pts = |k: &str| -> Vec<(f64, f64)> {
                    or.iter()
                        .filter_map(|x| Some((u(x, "size") as f64, n(x, k)?)))
                        .collect()
                };
                let mut series = vec![Series::new("rfx", pts("/rfx_avg_us"))];
                let mpi = pts("/mpi_avg_us");
                if !mpi.is_empty() {
                    series.push(Series::new("Open MPI", mpi));
                }
                (op, series)
            })
            .collect();
        doc.h(3, format!("{nr} ranks"));
        doc.figure(
            &format!("coll-{nr}ranks.svg"),
            plot::grid(
                &format!("collective latency vs size, {nr} ranks: rfx against Open MPI"),
                &panels,
                3,
            ),
            format!("{nr} ranks: mean per-call latency per operation against Open MPI"),
        );
        let table = rr
            .iter()
            .map(|x| {
                vec![
                    s(x, "op").to_string(),
                    u(x, "size").to_string(),
                    f(n(x, "/rfx_avg_us")),
                    f(n(x, "/mpi_avg_us")),
                    f(n(x, "/ratio")),
                ]
            })
            .collect();
        doc.table(&["op", "size", "rfx µs", "MPI µs", "x MPI"], table);
    }
}

/// Builds the report of `r`.
fn build(r: &Results) -> Doc {
    let mut doc = Doc::default();
    doc.h(1, "rfx benchmark report");
    doc.p(
        "Written by `rfx-bench report` from the result files of `rfx-bench all`. Every rfx \
         figure stands next to its baseline, measured in the same run with the same CPUs and \
         polling mode. On a shared or virtual machine the figures are indicative.",
    );
    goals_section(&mut doc, r);
    transport_section(&mut doc, r);
    invoke_section(&mut doc, r);
    throughput_section(&mut doc, r);
    cold_start_section(&mut doc, r);
    coll_section(&mut doc, r);
    run_section(&mut doc, r);
    machine_section(&mut doc, r);
    doc
}

/// `rfx-bench report`.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    anyhow::ensure!(dir.is_dir(), "{}: no such directory", dir.display());
    let r = load_dir(dir)?;
    anyhow::ensure!(
        r.transport.is_some()
            || r.invoke.is_some()
            || r.throughput.is_some()
            || r.cold_start.is_some()
            || r.coll.is_some(),
        "{}: no result files (transport.json, invoke.json, throughput.json, cold-start.json, \
         coll.json); run `rfx-bench all --json {}` first",
        dir.display(),
        dir.display()
    );
    let doc = build(&r);
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    let mut written = Vec::new();
    for b in &doc.0 {
        if let Block::Figure { file, svg, .. } = b {
            let p = plots.join(file);
            std::fs::write(&p, svg).with_context(|| format!("writing {}", p.display()))?;
            written.push(file.clone());
        }
    }
    let md = dir.join("report.md");
    std::fs::write(&md, doc.markdown()).with_context(|| format!("writing {}", md.display()))?;
    let html = dir.join("report.html");
    std::fs::write(&html, doc.html()).with_context(|| format!("writing {}", html.display()))?;
    println!(
        "report written to {} and {} ({} plots in {})",
        md.display(),
        html.display(),
        written.len(),
        plots.display()
    );
    for v in goals::evaluate(&r) {
        println!("goal {}: {} — {}", v.status.label(), v.goal, v.measured);
    }
    Ok(())
}
