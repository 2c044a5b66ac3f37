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
use rfx_fabric::TransportKind;
use serde::de::DeserializeOwned;

use crate::all::sockperf;
use crate::machine::Machine;
use crate::results::{CollRow, InvokeRow, MpiRow, TransportRow};
use crate::stats::Summary;
use goals::{finite, Results};
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

/// Reads `dir/name` into its type, if it is there.
fn load<T: DeserializeOwned>(dir: &Path, name: &str) -> anyhow::Result<Option<T>> {
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
        mpi: load(dir, "mpi.json")?,
        python: load(dir, "python.json")?,
        all: load(dir, "all.json")?,
    })
}

/// A number with 2 decimals (3 below 1), or `-` (none, or not finite).
fn f(x: impl Into<Option<f64>>) -> String {
    match x.into() {
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
fn cdf(summary: Option<&Summary>) -> Vec<(f64, f64)> {
    summary
        .and_then(|s| s.cdf_us)
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

/// The `(size, y)` points of rows that have a y.
fn by_size<T>(
    rows: &[&T],
    size: impl Fn(&T) -> usize,
    y: impl Fn(&T) -> Option<f64>,
) -> Vec<(f64, f64)> {
    rows.iter()
        .filter_map(|x| Some((size(x) as f64, y(x)?)))
        .collect()
}

/// Distinct keys, in order of first appearance.
fn distinct<K: PartialEq>(keys: impl IntoIterator<Item = K>) -> Vec<K> {
    let mut out: Vec<K> = Vec::new();
    for k in keys {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

fn baseline_short(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Shm => "raw shm",
        TransportKind::Tcp => "raw tcp",
        TransportKind::Ofi => "fi_pingpong",
        TransportKind::Verbs => "ib_write_lat",
    }
}

/// The fields of a machine as the report's rows: by name, in the order of
/// their names; lists as JSON.
fn machine_rows(m: &Machine) -> Vec<Vec<String>> {
    let list = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
    [
        ("affinity_cpus", m.affinity_cpus.to_string()),
        ("arch", m.arch.clone()),
        ("clocksource", m.clocksource.clone()),
        ("command_line", list(&m.command_line)),
        ("cpu0_siblings", m.cpu0_siblings.clone()),
        ("cpu_model", m.cpu_model.clone()),
        ("cpus", m.cpus.to_string()),
        ("date_unix", m.date_unix.to_string()),
        ("features", list(&m.features)),
        ("hostname", m.hostname.clone()),
        ("kernel", m.kernel.clone()),
        ("memory_total_kb", m.memory_total_kb.to_string()),
        ("profile", m.profile.clone()),
        ("rfx_version", m.rfx_version.clone()),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_string(), v])
    .collect()
}

fn machine_section(doc: &mut Doc, r: &Results) {
    let m = r
        .all
        .as_ref()
        .map(|a| &a.machine)
        .or_else(|| r.machines().next());
    let Some(m) = m else {
        return;
    };
    doc.h(2, "Machine and build");
    doc.table(&["", ""], machine_rows(m));
}

fn run_section(doc: &mut Doc, r: &Results) {
    let Some(all) = r.all.as_ref() else {
        return;
    };
    doc.h(2, "Run");
    if let Some(t) = finite(all.elapsed_s) {
        doc.p(format!("`rfx-bench all` took {t:.0} s."));
    }
    let steps = all
        .steps
        .iter()
        .map(|x| {
            vec![
                x.name.clone(),
                x.status.label().to_string(),
                f(x.seconds),
                x.note.clone(),
            ]
        })
        .collect();
    doc.table(&["step", "status", "seconds", "note"], steps);
    let base = all
        .baselines
        .iter()
        .map(|x| {
            vec![
                x.name.clone(),
                if x.found { "found" } else { "missing" }.to_string(),
                x.note.clone(),
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
    let rows = r.transport_rows();
    if rows.is_empty() {
        return;
    }
    let sock = r.sockperf_rows();
    doc.h(2, "Transport round trip");
    doc.p(
        "write_imm round trip (write, the peer's completion, its write_imm back, our completion) \
         per provider, size and polling mode (hot: busy poll; warm: blocking), against the raw \
         baseline of the same provider measured in the same run with the same CPUs and mode \
         (raw TCP socket, raw shared-memory flag ping-pong, fi_pingpong for ofi), and sockperf \
         for tcp where installed (hot: --nonblocked; warm: blocking). µs; x = rfx p50 / baseline p50.",
    );
    let raw_p50 = |x: &TransportRow| x.raw.as_ref().and_then(|s| finite(s.p50_us));
    for kind in distinct(rows.iter().map(|x| x.transport)) {
        let kr: Vec<&TransportRow> = rows.iter().filter(|x| x.transport == kind).collect();
        let base = baseline_short(kind);
        let tcp = kind == TransportKind::Tcp;
        let mut series = Vec::new();
        let mut cdfs = Vec::new();
        for mode in distinct(kr.iter().map(|x| x.mode.as_str())) {
            let mr: Vec<&TransportRow> = kr.iter().copied().filter(|x| x.mode == mode).collect();
            let size = |x: &TransportRow| x.size;
            series.push(Series::new(
                format!("rfx {mode}"),
                by_size(&mr, size, |x| finite(x.rfx.p50_us)),
            ));
            series.push(Series::new(
                format!("{base} {mode}"),
                by_size(&mr, size, raw_p50),
            ));
            if let Some(first) = mr.first() {
                let size = first.size;
                cdfs.push(Series::new(
                    format!("rfx {mode} {size} B"),
                    cdf(Some(&first.rfx)),
                ));
                let c = cdf(first.raw.as_ref());
                if !c.is_empty() {
                    cdfs.push(Series::new(format!("{base} {mode} {size} B"), c));
                }
            }
            if tcp {
                let sp: Vec<&sockperf::Row> = sock.iter().filter(|x| x.mode == mode).collect();
                if let Some(first) = sp.first() {
                    series.push(Series::new(
                        format!("sockperf {mode}"),
                        by_size(&sp, |x| x.size, |x| finite(x.sockperf.p50_us)),
                    ));
                    cdfs.push(Series::new(
                        format!("sockperf {mode} {} B", first.size),
                        first.sockperf.cdf_us.clone(),
                    ));
                }
            }
        }
        doc.h(3, kind.name());
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
        let with_sockperf = tcp && !sock.is_empty();
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
        if with_sockperf {
            head.extend(["sockperf p50", "x sockperf"]);
        }
        let table = kr
            .iter()
            .map(|x| {
                let rfx = finite(x.rfx.p50_us);
                let raw = raw_p50(x);
                let mut row = vec![
                    x.mode.clone(),
                    x.size.to_string(),
                    f(rfx),
                    f(x.rfx.p99_us),
                    f(x.rfx.p999_us),
                    f(x.rfx.max_us),
                    f(raw),
                    f(x.raw.as_ref().map(|s| s.p99_us)),
                    f(ratio(rfx, raw)),
                ];
                if with_sockperf {
                    let sp = goals::sockperf_p50(r, &x.mode, x.size);
                    row.extend([f(sp), f(ratio(rfx, sp))]);
                }
                row
            })
            .collect();
        doc.table(&head, table);
    }
}

fn invoke_section(doc: &mut Doc, r: &Results) {
    let rows = r.invoke_rows();
    if rows.is_empty() {
        return;
    }
    doc.h(2, "Invocation round trip");
    doc.p(
        "invoke() of noop and echo through an in-process executor (one worker pinned to the \
         other CPU) against rfx's own write_imm round trip of the same size measured in the same \
         run (x rt), and the raw baseline of the transport benchmark (x raw). µs.",
    );
    let size = |x: &InvokeRow| x.size;
    for kind in distinct(rows.iter().map(|x| x.transport)) {
        let kr: Vec<&InvokeRow> = rows.iter().filter(|x| x.transport == kind).collect();
        let base = baseline_short(kind);
        let mut series = Vec::new();
        let mut cdfs = Vec::new();
        for mode in distinct(kr.iter().map(|x| x.mode.as_str())) {
            let mr: Vec<&InvokeRow> = kr.iter().copied().filter(|x| x.mode == mode).collect();
            for function in distinct(mr.iter().map(|x| x.function.as_str())) {
                if mode != "hot" && function != "noop" {
                    continue;
                }
                let fr: Vec<&InvokeRow> = mr
                    .iter()
                    .copied()
                    .filter(|x| x.function == function)
                    .collect();
                series.push(Series::new(
                    format!("{function} {mode}"),
                    by_size(&fr, size, |x| finite(x.invoke.p50_us)),
                ));
                if function == "noop" {
                    series.push(Series::new(
                        format!("rfx write_imm {mode}"),
                        by_size(&fr, size, |x| finite(x.transport_pingpong.p50_us)),
                    ));
                    if let Some(first) = fr.first() {
                        let size = first.size;
                        cdfs.push(Series::new(
                            format!("noop {mode} {size} B"),
                            cdf(Some(&first.invoke)),
                        ));
                        cdfs.push(Series::new(
                            format!("rfx write_imm {mode} {size} B"),
                            cdf(Some(&first.transport_pingpong)),
                        ));
                    }
                }
            }
            if mode == "hot" {
                let noop: Vec<&InvokeRow> = mr
                    .iter()
                    .copied()
                    .filter(|x| x.function == "noop")
                    .collect();
                let raw = by_size(&noop, size, |x| goals::raw_p50(r, kind, "hot", x.size));
                if !raw.is_empty() {
                    series.push(Series::new(format!("{base} hot (transport run)"), raw));
                }
            }
        }
        doc.h(3, kind.name());
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
                let inv = finite(x.invoke.p50_us);
                let raw = goals::raw_p50(r, kind, &x.mode, x.size);
                vec![
                    x.mode.clone(),
                    x.function.clone(),
                    x.size.to_string(),
                    f(inv),
                    f(x.invoke.p99_us),
                    f(x.invoke.p999_us),
                    f(x.transport_pingpong.p50_us),
                    f(x.ratio_p50),
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
    let rows = r.throughput_rows();
    if rows.is_empty() {
        return;
    }
    doc.h(2, "Throughput");
    doc.p(format!(
        "Pipelined noop invocations per second: N client threads, each with its own connection \
         to one of the N workers of an in-process executor, {} in flight per client; \
         latency = submit to result of one invocation in 16.",
        rows.first().map_or(0, |x| x.depth)
    ));
    let series: Vec<Series> = distinct(rows.iter().map(|x| x.transport))
        .into_iter()
        .map(|k| {
            let pts = rows
                .iter()
                .filter(|x| x.transport == k)
                .filter_map(|x| Some((x.threads as f64, finite(x.invocations_per_s)?)))
                .collect();
            Series::new(k.name(), pts)
        })
        .collect();
    let goal = r
        .throughput
        .as_ref()
        .and_then(|t| finite(t.goal_per_s))
        .unwrap_or(2e6);
    doc.figure(
        "throughput.svg",
        plot::throughput("no-op invocations/s vs client threads", &series, goal),
        "throughput against client threads, per transport",
    );
    let table = rows
        .iter()
        .map(|x| {
            vec![
                x.transport.name().to_string(),
                x.mode.clone(),
                x.threads.to_string(),
                finite(x.invocations_per_s).map_or("-".into(), |v| format!("{v:.0}")),
                f(x.latency.p50_us),
                f(x.latency.p99_us),
                f(x.latency.p999_us),
                if x.oversubscribed {
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
    let chain = &cs.chain;
    doc.h(2, "Cold start");
    doc.p(format!(
        "From nothing to the first noop result ({chain} chain), per phase, p50 in ms, against \
         the floor of spawning a trivial process in the same run."
    ));
    let mut bars = Vec::new();
    let mut table = Vec::new();
    for x in &cs.results {
        let kind = x.transport.name();
        let mut segs = Vec::new();
        for p in &x.phases {
            let Some(sp) = x.phase(p) else {
                continue;
            };
            let ms = |v: f64| finite(v).map(|v| v / 1e3);
            if p != "total" {
                segs.push((p.clone(), ms(sp.p50_us).unwrap_or(0.0)));
            }
            table.push(vec![
                kind.to_string(),
                p.clone(),
                f(ms(sp.p50_us)),
                f(ms(sp.p90_us)),
                f(ms(sp.p99_us)),
                f(ms(sp.max_us)),
            ]);
        }
        bars.push(Bar {
            label: format!("{chain} {kind}"),
            segments: segs,
        });
    }
    for fl in &cs.floor {
        let what = fl.what.as_str();
        let ms = |v: f64| finite(v).map(|v| v / 1e3);
        bars.push(Bar {
            label: what.split(" (").next().unwrap_or(what).to_string(),
            segments: vec![(
                "process spawn (floor)".into(),
                ms(fl.spread.p50_us).unwrap_or(0.0),
            )],
        });
        table.push(vec![
            "floor".into(),
            what.to_string(),
            f(ms(fl.spread.p50_us)),
            f(ms(fl.spread.p90_us)),
            f(ms(fl.spread.p99_us)),
            f(ms(fl.spread.max_us)),
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
    let rows = r.coll_rows();
    if rows.is_empty() {
        return;
    }
    let pipelined = r.coll.as_ref().is_some_and(|c| c.method != "osu");
    if pipelined {
        doc.h(2, "Collectives: pipelined throughput (not latency)");
        doc.p(
            "Pipelined: per operation and size, warm-up, a barrier, then back-to-back calls timed \
             as one block on every rank; the figure is the mean over ranks of block / calls, µs. \
             A sender runs ahead of its receivers, so this is throughput per call, not latency. \
             Open MPI (bench/mpi/coll_lat.c, vader) runs the same method. x = rfx / MPI.",
        );
    } else {
        doc.h(2, "Collectives");
        doc.p(
            "OSU's method: per operation and size, warm-up, then every call timed on its own with \
             an untimed barrier after it; a rank's figure is the mean of its calls, the figure the \
             mean over ranks, µs. Open MPI (bench/mpi/coll_lat.c, vader) runs the same loop in the \
             same run. x = rfx / MPI.",
        );
    }
    let mut ranks: Vec<usize> = rows.iter().map(|x| x.ranks).collect();
    ranks.sort_unstable();
    ranks.dedup();
    for nr in ranks {
        let rr: Vec<&CollRow> = rows.iter().filter(|x| x.ranks == nr).collect();
        let panels: Vec<(String, Vec<Series>)> = distinct(rr.iter().map(|x| x.op.as_str()))
            .into_iter()
            .filter(|op| *op != "barrier")
            .map(|op| {
                let or: Vec<&CollRow> = rr.iter().copied().filter(|x| x.op == op).collect();
                let size = |x: &CollRow| x.size;
                let mut series = vec![Series::new(
                    "rfx",
                    by_size(&or, size, |x| finite(x.rfx_avg_us)),
                )];
                let mpi = by_size(&or, size, |x| finite(x.mpi_avg_us?));
                if !mpi.is_empty() {
                    series.push(Series::new("Open MPI", mpi));
                }
                (op.to_string(), series)
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
                    x.op.clone(),
                    x.size.to_string(),
                    f(x.rfx_avg_us),
                    f(x.mpi_avg_us),
                    f(x.ratio),
                ]
            })
            .collect();
        doc.table(&["op", "size", "rfx µs", "MPI µs", "x MPI"], table);
    }
}

fn mpi_section(doc: &mut Doc, r: &Results) {
    let Some(m) = &r.mpi else { return };
    doc.h(2, "MPI programs: OSU on rfx, MPICH and Open MPI");
    doc.p(
        "The unmodified OSU Micro-Benchmarks 7.4, as OSU reports them (its own loop: per-call \
         timing, a barrier between calls, the average over ranks). One build with MPICH's \
         mpicc_abi runs on rfx's libmpi_abi.so.1 and on MPICH's; Open MPI runs its own build. \
         Medians of the rounds; x = rfx / other (latency: below 1 rfx is faster; bandwidth: \
         above 1).",
    );
    doc.table(
        &["implementation"],
        m.implementations.iter().map(|i| vec![i.clone()]).collect(),
    );
    if !m.overhead.is_empty() {
        doc.p("The ABI layer's cost: the same call through libmpi_abi.so.1 and on the communicator, one rank, ns per call.");
        doc.table(
            &["call", "direct ns", "through the ABI ns", "overhead ns"],
            m.overhead
                .iter()
                .map(|o| {
                    vec![
                        o.call.clone(),
                        f(o.direct_ns),
                        f(o.abi_ns),
                        f(o.overhead_ns),
                    ]
                })
                .collect(),
        );
    }
    let rows = &m.results;
    let mut ranks: Vec<usize> = rows.iter().map(|x| x.ranks).collect();
    ranks.sort_unstable();
    ranks.dedup();
    for nr in ranks {
        let rr: Vec<&MpiRow> = rows.iter().filter(|x| x.ranks == nr).collect();
        let panels: Vec<(String, Vec<Series>)> = distinct(rr.iter().map(|x| x.benchmark.as_str()))
            .into_iter()
            .filter(|b| *b != "osu_barrier")
            .map(|b| {
                let br: Vec<&MpiRow> = rr.iter().copied().filter(|x| x.benchmark == b).collect();
                let size = |x: &MpiRow| x.size;
                let mut series = vec![Series::new("rfx", by_size(&br, size, |x| finite(x.rfx)))];
                for (name, pts) in [
                    ("MPICH", by_size(&br, size, |x| finite(x.mpich?))),
                    ("Open MPI", by_size(&br, size, |x| finite(x.ompi?))),
                ] {
                    if !pts.is_empty() {
                        series.push(Series::new(name, pts));
                    }
                }
                (b.to_string(), series)
            })
            .collect();
        doc.figure(
            &format!("mpi-{nr}ranks.svg"),
            plot::grid(
                &format!("OSU, {nr} ranks: rfx, MPICH, Open MPI"),
                &panels,
                3,
            ),
            format!(
                "{nr} ranks: OSU's figures per benchmark and size (osu_bw in MB/s, the rest in µs)"
            ),
        );
        let table = rr
            .iter()
            .map(|x| {
                vec![
                    x.benchmark.clone(),
                    x.size.to_string(),
                    x.unit.clone(),
                    f(x.rfx),
                    f(x.mpich),
                    f(x.ompi),
                    f(x.x_mpich),
                    f(x.x_ompi),
                ]
            })
            .collect();
        doc.table(
            &[
                "benchmark",
                "size",
                "unit",
                "rfx",
                "MPICH",
                "Open MPI",
                "x MPICH",
                "x Open MPI",
            ],
            table,
        );
    }
}

fn python_section(doc: &mut Doc, r: &Results) {
    let Some(py) = &r.python else { return };
    doc.h(
        2,
        "Python: rfx next to Ray, Dask, Parsl and ProcessPoolExecutor",
    );
    doc.p(
        "`bench/python/bench.py`, one run: no-op and 4 KiB echo tasks, one at a time (p50, \
         p99) and many in flight (tasks/s), and the time from starting the framework to the \
         first result. rfx runs a C function on a leased executor over shm.",
    );
    let rows = py
        .rows
        .iter()
        .map(|x| {
            vec![
                x.framework.clone(),
                x.task.clone(),
                f(x.p50_us),
                f(x.p99_us),
                format!("{:.0}", x.tasks_per_s),
                f(x.cold_start_s),
            ]
        })
        .collect();
    doc.table(
        &[
            "framework",
            "task",
            "p50 µs",
            "p99 µs",
            "tasks/s",
            "cold start s",
        ],
        rows,
    );
    for (k, why) in &py.skipped {
        doc.p(format!("Skipped {k}: {why}."));
    }
    let noop: Vec<&crate::results::PythonRow> =
        py.rows.iter().filter(|x| x.task == "noop").collect();
    if noop.is_empty() {
        return;
    }
    let labels: Vec<String> = noop.iter().map(|x| x.framework.clone()).collect();
    doc.figure(
        "python-latency.svg",
        plot::log_bars(
            "no-op task, one at a time (p50, log scale)",
            "µs",
            &labels,
            &noop.iter().map(|x| x.p50_us).collect::<Vec<_>>(),
        ),
        "Python task latency by framework".to_string(),
    );
    doc.figure(
        "python-throughput.svg",
        plot::log_bars(
            "no-op tasks in flight (log scale)",
            "tasks/s",
            &labels,
            &noop.iter().map(|x| x.tasks_per_s).collect::<Vec<_>>(),
        ),
        "Python task throughput by framework".to_string(),
    );
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
    mpi_section(&mut doc, r);
    python_section(&mut doc, r);
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
            || r.coll.is_some()
            || r.mpi.is_some()
            || r.python.is_some(),
        "{}: no result files (transport.json, invoke.json, throughput.json, cold-start.json, \
         coll.json, mpi.json, python.json); run `rfx-bench all --json {}` first",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_results_become_a_table_and_two_log_plots() {
        let text = r#"{"bench": "python", "meta": {"cpus": 2},
            "rows": [
              {"framework": "rfx", "task": "noop", "p50_us": 5.7, "p99_us": 12.5,
               "tasks_per_s": 166538, "cold_start_s": 0.14},
              {"framework": "Ray", "task": "noop", "p50_us": 824.2, "p99_us": 1276.3,
               "tasks_per_s": 4213, "cold_start_s": 3.01},
              {"framework": "rfx", "task": "echo", "p50_us": 6.9, "p99_us": null,
               "tasks_per_s": 132652, "cold_start_s": 0.14}],
            "skipped": {"parsl": "not installed"}}"#;
        let r = Results {
            python: Some(serde_json::from_str(text).expect("python.json parses")),
            ..Results::default()
        };
        let doc = build(&r);
        let md = doc.markdown();
        assert!(md.contains("| Ray | noop | 824.20 |"), "{md}");
        assert!(md.contains("Skipped parsl: not installed."));
        let figures: Vec<&str> = doc
            .0
            .iter()
            .filter_map(|b| match b {
                Block::Figure { file, svg, .. } => {
                    let ray = if file.contains("latency") {
                        "824.2"
                    } else {
                        "4213.0"
                    };
                    assert!(svg.contains("<rect") && svg.contains(ray), "{file}");
                    Some(file.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(figures, ["python-latency.svg", "python-throughput.svg"]);
    }

    #[test]
    fn machine_rows_are_the_fields_as_written() {
        let m = crate::machine::describe();
        let written = match serde_json::to_value(&m).expect("serialize") {
            serde_json::Value::Object(o) => o,
            other => panic!("not an object: {other}"),
        };
        let want: Vec<Vec<String>> = written
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                vec![k, v]
            })
            .collect();
        assert_eq!(machine_rows(&m), want);
    }

    #[test]
    fn a_file_that_does_not_parse_is_named() {
        let dir = std::env::temp_dir().join(format!("rfx-bench-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("coll.json"), r#"{"bench": "coll", "rows": 3}"#).expect("write");
        let err = load_dir(&dir).expect_err("a broken coll.json");
        let _ = std::fs::remove_dir_all(&dir);
        let msg = format!("{err:#}");
        assert!(
            msg.contains("parsing") && msg.contains("coll.json"),
            "{msg}"
        );
    }
}
