//! `--csv FILE`: the result rows of a report as CSV, nested objects
//! flattened to `a.b` columns; arrays (per-sample data, CDFs, per-thread
//! figures) are left to the JSON.

use std::path::Path;

use anyhow::Context;
use serde_json::{Map, Value};

/// The rows of a result file: `results` (or `rows` for `coll`).
fn rows(report: &Value) -> &[Value] {
    ["results", "rows"]
        .iter()
        .find_map(|k| report.get(*k).and_then(Value::as_array))
        .map_or(&[], Vec::as_slice)
}

fn flatten(prefix: &str, v: &Map<String, Value>, out: &mut Vec<(String, String)>) {
    for (k, x) in v {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match x {
            Value::Object(m) => flatten(&key, m, out),
            Value::Array(_) => {}
            Value::Null => out.push((key, String::new())),
            Value::String(s) => out.push((key, s.clone())),
            other => out.push((key, other.to_string())),
        }
    }
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// The CSV text of the rows of `report`: a header of every column seen
/// (in the order first seen; keys of one row come sorted, as serde_json
/// keeps them), then one line per row.
pub fn to_csv(report: &Value) -> String {
    let mut columns: Vec<String> = Vec::new();
    let mut lines = Vec::new();
    for row in rows(report) {
        let mut cells = Vec::new();
        if let Some(m) = row.as_object() {
            flatten("", m, &mut cells);
        }
        for (k, _) in &cells {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
        lines.push(cells);
    }
    let mut out = columns
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for cells in lines {
        let line: Vec<String> = columns
            .iter()
            .map(|c| {
                cells
                    .iter()
                    .find(|(k, _)| k == c)
                    .map_or(String::new(), |(_, v)| quote(v))
            })
            .collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// Writes the rows of `report` as CSV to `path`.
pub fn write(path: &Path, report: &Value) -> anyhow::Result<()> {
    std::fs::write(path, to_csv(report)).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn rows_flatten_to_columns() {
        let report = json!({
            "bench": "transport",
            "results": [
                {"transport": "shm", "size": 8, "rfx": {"p50_us": 0.2, "cdf_us": [[0.5, 0.2]]}, "note": "a,b"},
                {"transport": "tcp", "size": 8, "rfx": {"p50_us": 7.5}, "extra": null}
            ]
        });
        assert_eq!(
            super::to_csv(&report),
            "note,rfx.p50_us,size,transport,extra\n\"a,b\",0.2,8,shm,\n,7.5,8,tcp,\n"
        );
        let coll = json!({"rows": [{"op": "bcast", "ratio": 1.5}]});
        assert_eq!(super::to_csv(&coll), "op,ratio\nbcast,1.5\n");
        assert_eq!(super::to_csv(&json!({})), "\n");
    }
}
