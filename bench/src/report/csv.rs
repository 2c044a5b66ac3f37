//! `--csv FILE`: the result rows of a report as CSV, nested objects
//! flattened to `a.b` columns; arrays (per-sample data, CDFs, per-thread
//! figures) are left to the JSON.
//!
//! The rows are serialized as the JSON has them and flattened from
//! there, whatever their type: a `serde_json::Value` is the one
//! representation every row type shares here.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::{Map, Value};

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

/// The CSV text of `rows`: a header of every column seen (in the order
/// first seen; keys of one row come sorted, as serde_json keeps them),
/// then one line per row.
pub fn to_csv<R: Serialize>(rows: &[R]) -> anyhow::Result<String> {
    let mut columns: Vec<String> = Vec::new();
    let mut lines = Vec::new();
    for row in rows {
        let mut cells = Vec::new();
        if let Value::Object(m) = serde_json::to_value(row)? {
            flatten("", &m, &mut cells);
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
    Ok(out)
}

/// Writes `rows` as CSV to `path`.
pub fn write<R: Serialize>(path: &Path, rows: &[R]) -> anyhow::Result<()> {
    std::fs::write(path, to_csv(rows)?).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    #[test]
    fn rows_flatten_to_columns() {
        let rows = [
            json!({"transport": "shm", "size": 8, "rfx": {"p50_us": 0.2, "cdf_us": [[0.5, 0.2]]}, "note": "a,b"}),
            json!({"transport": "tcp", "size": 8, "rfx": {"p50_us": 7.5}, "extra": null}),
        ];
        assert_eq!(
            super::to_csv(&rows).expect("csv"),
            "note,rfx.p50_us,size,transport,extra\n\"a,b\",0.2,8,shm,\n,7.5,8,tcp,\n"
        );
        let coll = crate::results::CollRow {
            op: "bcast".into(),
            ranks: 2,
            size: 8,
            rfx_avg_us: 1.5,
            mpi_avg_us: None,
            ratio: Some(1.5),
        };
        assert_eq!(
            super::to_csv(&[coll]).expect("csv"),
            "mpi_avg_us,op,ranks,ratio,rfx_avg_us,size\n,bcast,2,1.5,1.5,8\n"
        );
        assert_eq!(super::to_csv::<Value>(&[]).expect("csv"), "\n");
    }
}
