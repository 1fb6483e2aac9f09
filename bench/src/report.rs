//! One table (figure, value, ceiling, ratio, target, met) printed as
//! Markdown, and the same rows plus raw details written as JSON.

use crate::http::LoadResult;
use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Row {
    figure: String,
    value: f64,
    unit: String,
    ceiling: Option<(f64, String)>,
    notes: Vec<String>,
    target: Option<(String, bool)>,
}

impl Row {
    pub fn new(figure: &str, value: f64, unit: &str) -> Row {
        Row {
            figure: figure.to_owned(),
            value,
            unit: unit.to_owned(),
            ceiling: None,
            notes: Vec::new(),
            target: None,
        }
    }

    pub fn ceiling(mut self, value: f64, what: &str) -> Row {
        self.ceiling = Some((value, what.to_owned()));
        self
    }

    pub fn note(mut self, text: &str) -> Row {
        if !text.is_empty() {
            self.notes.push(text.to_owned());
        }
        self
    }

    pub fn latency(self, r: &LoadResult) -> Row {
        let text = format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
            r.pct_ms(50.0),
            r.pct_ms(99.0),
            r.max_ms()
        );
        self.note(&text)
    }

    pub fn target(mut self, text: &str, met: bool) -> Row {
        self.target = Some((text.to_owned(), met));
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.ceiling
            .as_ref()
            .filter(|(c, _)| *c > 0.0)
            .map(|(c, _)| self.value / c)
    }
}

/// 12,345 for big numbers, 12.3 / 1.23 for small ones.
pub fn num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        if v < 0.0 {
            format!("-{out}")
        } else {
            out
        }
    } else if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A message the fake saw twice: (type, biz_opaque_callback_data).
pub type Duplicate = (String, String);

pub struct Report {
    quick: bool,
    concurrency: usize,
    rows: Vec<Row>,
    details: Map<String, Value>,
    children: Map<String, Value>,
    duplicates: Vec<(String, u64, Vec<Duplicate>)>,
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    json!({"nproc": nproc, "cpu_model": model, "memory_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
           "loadavg_at_end": loadavg()})
}

/// /proc/loadavg's first three figures: other work on the machine makes
/// every figure of the run noisier.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// UTC date and time, ISO 8601, from the system clock.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Report {
    pub fn new(quick: bool, concurrency: usize) -> Report {
        Report {
            quick,
            concurrency,
            rows: Vec::new(),
            details: Map::new(),
            children: Map::new(),
            duplicates: Vec::new(),
        }
    }

    pub fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn detail(&mut self, key: &str, value: Value) {
        self.details.insert(key.to_owned(), value);
    }

    pub fn child(&mut self, name: &str, value: Value) {
        let key = if self.children.contains_key(name) {
            (2..)
                .map(|i| format!("{name} #{i}"))
                .find(|k| !self.children.contains_key(k))
                .expect("a free key")
        } else {
            name.to_owned()
        };
        self.children.insert(key, value);
    }

    /// Duplicates one run's fake counted, with the first few (type, order).
    pub fn add_duplicates(&mut self, name: &str, n: u64, examples: Vec<Duplicate>) {
        self.duplicates.push((name.to_owned(), n, examples));
    }

    pub fn duplicates_total(&self) -> u64 {
        self.duplicates.iter().map(|(_, n, _)| n).sum()
    }

    /// "run: n (type order, …)" for each run that had any.
    pub fn duplicates_text(&self) -> String {
        self.duplicates
            .iter()
            .filter(|(_, n, _)| *n > 0)
            .map(|(name, n, ex)| {
                let ex: Vec<String> = ex.iter().map(|(t, o)| format!("{t} {o}")).collect();
                format!("{name}: {n} ({})", ex.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn command(&self) -> String {
        format!(
            "cargo run --release -p bench{}",
            if self.quick { " -- --quick" } else { "" }
        )
    }

    pub fn print(&self) {
        let m = machine();
        println!();
        println!(
            "orderlink benchmark, {} ({}; {} cores, {}, {} GiB), concurrency {}, load average at start {} / at end {}",
            utc_now(),
            self.command(),
            m["nproc"],
            m["cpu_model"].as_str().unwrap_or(""),
            m["memory_gib"],
            self.concurrency,
            self.details
                .get("loadavg_at_start")
                .and_then(|v| v.as_str())
                .unwrap_or("?"),
            loadavg()
        );
        println!();
        println!("| figure | value | ceiling | ratio | target | met | notes |");
        println!("|---|---:|---:|---:|---|---|---|");
        for r in &self.rows {
            let value = format!("{} {}", num(r.value), r.unit);
            let ceiling = r
                .ceiling
                .as_ref()
                .map(|(c, what)| format!("{} ({what})", num(*c)))
                .unwrap_or_default();
            let ratio = r.ratio().map(|x| format!("{x:.2}")).unwrap_or_default();
            let (target, met) = match &r.target {
                Some((t, met)) => (t.as_str(), if *met { "met" } else { "NOT MET" }),
                None => ("", ""),
            };
            println!(
                "| {} | {} | {ceiling} | {ratio} | {target} | {met} | {} |",
                r.figure,
                value.trim(),
                r.notes.join("; ")
            );
        }
        println!();
    }

    pub fn json(&self) -> String {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "figure": r.figure,
                    "value": r.value,
                    "unit": r.unit,
                    "ceiling": r.ceiling.as_ref().map(|(c, _)| *c),
                    "ceiling_is": r.ceiling.as_ref().map(|(_, w)| w.clone()),
                    "ratio": r.ratio(),
                    "target": r.target.as_ref().map(|(t, _)| t.clone()),
                    "met": r.target.as_ref().map(|(_, m)| *m),
                    "notes": r.notes,
                })
            })
            .collect();
        let doc = json!({
            "date": utc_now(),
            "command": self.command(),
            "quick": self.quick,
            "concurrency": self.concurrency,
            "machine": machine(),
            "rows": rows,
            "details": self.details,
            "orderlink_children": self.children,
            "duplicates_by_run": self.duplicates.iter().map(|(k, v, ex)| (k.clone(), json!({"count": v, "first": ex}))).collect::<Map<_, _>>(),
        });
        serde_json::to_string_pretty(&doc).expect("serialise the results") + "\n"
    }
}

/// The rows of several runs of the same plan (`--both`: one core, then
/// every core) as one table: a value column per run, and per run whether
/// the target was met. Rows are matched by position and figure.
pub fn print_side_by_side(docs: &[(&str, Value)], args: &[&String]) {
    let rows = |doc: &Value| doc["rows"].as_array().cloned().unwrap_or_default();
    let Some((_, first)) = docs.first() else {
        return;
    };
    let m = machine();
    println!();
    println!(
        "orderlink benchmark, {} (cargo run --release -p bench -- --both{}; {} cores, {}, {} GiB), load average at the end {}",
        utc_now(),
        args.iter().map(|a| format!(" {a}")).collect::<String>(),
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or(""),
        m["memory_gib"],
        loadavg()
    );
    println!();
    let names: Vec<&str> = docs.iter().map(|(n, _)| *n).collect();
    println!(
        "| figure | {} | target | {} |",
        names.join(" | "),
        names
            .iter()
            .map(|n| format!("met, {n}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!(
        "|---|{}---|{}",
        "---:|".repeat(names.len()),
        "---|".repeat(names.len())
    );
    let all: Vec<Vec<Value>> = docs.iter().map(|(_, d)| rows(d)).collect();
    for (i, row) in rows(first).iter().enumerate() {
        let figure = row["figure"].as_str().unwrap_or("");
        let cell = |r: Option<&Value>| -> String {
            let Some(r) = r.filter(|r| r["figure"].as_str() == Some(figure)) else {
                return String::new();
            };
            let value = format!(
                "{} {}",
                num(r["value"].as_f64().unwrap_or(0.0)),
                r["unit"].as_str().unwrap_or("")
            );
            match r["ratio"].as_f64() {
                Some(ratio) => format!(
                    "{} (×{ratio:.2} of {})",
                    value.trim(),
                    r["ceiling_is"].as_str().unwrap_or("ceiling")
                ),
                None => value.trim().to_owned(),
            }
        };
        let met = |r: Option<&Value>| -> &str {
            match r
                .filter(|r| r["figure"].as_str() == Some(figure))
                .map(|r| &r["met"])
            {
                Some(Value::Bool(true)) => "met",
                Some(Value::Bool(false)) => "NOT MET",
                _ => "",
            }
        };
        println!(
            "| {figure} | {} | {} | {} |",
            all.iter()
                .map(|rs| cell(rs.get(i)))
                .collect::<Vec<_>>()
                .join(" | "),
            row["target"].as_str().unwrap_or(""),
            all.iter()
                .map(|rs| met(rs.get(i)))
                .collect::<Vec<_>>()
                .join(" | "),
        );
    }
    println!();
}
