//! `synod check`: checks recorded histories for linearizability (and, for the bank, the
//! bank invariants), one verdict line per file.
//!
//! Output: per file, in the order given, `FILE<TAB>linearizable|not-linearizable|unknown`
//! (bank histories get a third column, `bank-ok` or `bank-errors=N`); then one line with
//! the total time. Files are checked in parallel, each with its own budget. The exit code
//! is 0 when every file was checked (a violation is a finding, not an error) and 2 when a
//! file could not be read or parsed, or holds no operation at all: an empty file, or one
//! of lines in another format, is almost always the wrong file or the wrong `--format`,
//! and calling it "linearizable" would hide that (`--allow-empty` accepts an empty run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use rayon::prelude::*;
use synod_check::bank::{check_bank, BankSpec};
use synod_check::formats::{self, Format};
use synod_check::{analyze, Analysis, CheckOptions, Event, EventType, ModelKind, Verdict};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// A single compare-and-set register: read, write, cas.
    Register,
    /// A key-value store (get, put, append, delete, cas), checked key by key.
    Kv,
    /// The bank: transfers and reads of all balances, plus the bank invariants.
    Bank,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Synod's own history format: one JSON event per line.
    Jsonl,
    /// Jepsen etcd logs (`INFO  jepsen.util - 4  :ok  :read  3`).
    Jepsen,
    /// Jepsen key-value EDN maps (`{:process 0, :type :ok, :f :get, :key "7", :value ""}`).
    /// Implies --kv-missing-is-empty.
    JepsenKv,
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The sequential specification to check against.
    #[arg(long, value_enum, default_value_t = ModelArg::Register)]
    pub model: ModelArg,
    /// The format of the history files.
    #[arg(long, value_enum, default_value_t = FormatArg::Jsonl)]
    pub format: FormatArg,
    /// Time budget per file, in milliseconds; past it the verdict is `unknown`.
    #[arg(long, default_value_t = 10_000)]
    pub budget_ms: u64,
    /// Write one self-contained HTML timeline per file into this directory.
    #[arg(long, value_name = "DIR")]
    pub html: Option<PathBuf>,
    /// Print why each non-linearizable history is not linearizable (and every bank error).
    #[arg(long)]
    pub explain: bool,
    /// A missing key reads as the empty string (kv and register).
    #[arg(long)]
    pub kv_missing_is_empty: bool,
    /// Bank: initial balances, e.g. `a0=100,a1=100`. Without it they are taken from the
    /// first successful read invoked before any transfer.
    #[arg(long, value_name = "ACCT=N,..")]
    pub bank_initial: Option<String>,
    /// Also print each file's check time in milliseconds (a third column).
    #[arg(long)]
    pub timings: bool,
    /// Accept a history with no operations (a run that recorded nothing) as linearizable
    /// instead of refusing it as an input error.
    #[arg(long)]
    pub allow_empty: bool,
    /// History files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// What one file came to.
enum FileResult {
    Checked {
        analysis: Box<Analysis>,
        bank: Option<Result<synod_check::bank::BankReport, String>>,
        elapsed: Duration,
    },
    Error(String),
}

pub fn run(args: CheckArgs) -> ExitCode {
    let started = Instant::now();
    let format = match args.format {
        FormatArg::Jsonl => Format::Jsonl,
        FormatArg::Jepsen => Format::Jepsen,
        FormatArg::JepsenKv => Format::JepsenKv,
    };
    let model = match args.model {
        ModelArg::Register => ModelKind::Register,
        ModelArg::Kv => ModelKind::Kv,
        ModelArg::Bank => ModelKind::Bank,
    };
    let opts = CheckOptions {
        budget: Duration::from_millis(args.budget_ms),
        kv_missing_is_empty: args.kv_missing_is_empty || format == Format::JepsenKv,
    };
    let bank_initial = match args.bank_initial.as_deref().map(parse_balances).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("synod check: --bank-initial: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = &args.html {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("synod check: cannot create {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    }
    let explain = args.explain || args.html.is_some();

    let results: Vec<FileResult> = args
        .files
        .par_iter()
        .map(|path| check_file(path, format, model, &opts, explain, bank_initial.as_ref(), args.allow_empty))
        .collect();

    let mut failed = false;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (path, result) in args.files.iter().zip(&results) {
        match result {
            FileResult::Error(e) => {
                failed = true;
                eprintln!("synod check: {e}");
            }
            FileResult::Checked { analysis, bank, elapsed } => {
                *counts.entry(analysis.verdict.to_string()).or_default() += 1;
                let mut line = format!("{}\t{}", path.display(), analysis.verdict);
                match bank {
                    Some(Ok(r)) if r.ok => line.push_str("\tbank-ok"),
                    Some(Ok(r)) => line.push_str(&format!("\tbank-errors={}", r.errors.len())),
                    Some(Err(e)) => {
                        line.push_str("\tbank-unchecked");
                        eprintln!("synod check: {}: bank invariants not checked: {e}", path.display());
                    }
                    None => {}
                }
                if args.timings {
                    line.push_str(&format!("\t{:.1} ms", elapsed.as_secs_f64() * 1e3));
                }
                println!("{line}");
                if args.explain {
                    if analysis.verdict == Verdict::NotLinearizable {
                        println!("{}", indent(&analysis.explain_text()));
                    } else if let Some(note) = &analysis.note {
                        println!("    {note}");
                    }
                    if let Some(Ok(r)) = bank {
                        r.errors.iter().for_each(|e| println!("    bank: {e}"));
                    }
                }
                if let Some(dir) = &args.html {
                    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                    let out = dir.join(format!("{name}.html"));
                    let page = synod_check::html::render(&path.display().to_string(), analysis);
                    if let Err(e) = std::fs::write(&out, page) {
                        failed = true;
                        eprintln!("synod check: cannot write {}: {e}", out.display());
                    }
                }
            }
        }
    }
    let summary: Vec<String> = counts.iter().map(|(v, n)| format!("{n} {v}")).collect();
    println!(
        "total\t{} files in {:.1} ms ({})",
        args.files.len(),
        started.elapsed().as_secs_f64() * 1e3,
        summary.join(", ")
    );
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn check_file(
    path: &Path,
    format: Format,
    model: ModelKind,
    opts: &CheckOptions,
    explain: bool,
    bank_initial: Option<&BTreeMap<String, i64>>,
    allow_empty: bool,
) -> FileResult {
    let started = Instant::now();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return FileResult::Error(format!("{}: cannot read: {e}", path.display())),
    };
    let parsed = match formats::parse(format, &text) {
        Ok(p) => p,
        Err(e) => return FileResult::Error(format!("{}:{}: {}", path.display(), e.line, e.message)),
    };
    if parsed.events.is_empty() && !allow_empty {
        let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
        return FileResult::Error(format!(
            "{}: no operations found in {lines} non-empty lines: is this a history in the {} format? \
             (--format chooses another; --allow-empty accepts a run that recorded nothing)",
            path.display(),
            match format {
                Format::Jsonl => "jsonl",
                Format::Jepsen => "jepsen",
                Format::JepsenKv => "jepsen-kv",
            }
        ));
    }
    let analysis = match analyze(model, &parsed.events, opts, explain) {
        Ok(a) => a,
        // Pairing was checked by the parser, so this is an operation the model does not
        // know, reported by its source line.
        Err(e) => {
            let line = parsed.lines.get(e.event).copied().unwrap_or(0);
            return FileResult::Error(format!("{}:{line}: {}", path.display(), e.message));
        }
    };
    let bank = (model == ModelKind::Bank).then(|| {
        let initial = match bank_initial {
            Some(b) => b.clone(),
            None => infer_initial(&parsed.events)?,
        };
        Ok(check_bank(&parsed.events, &BankSpec { initial }))
    });
    FileResult::Checked { analysis: Box::new(analysis), bank, elapsed: started.elapsed() }
}

/// `a0=100,a1=100` -> balances.
fn parse_balances(s: &str) -> Result<BTreeMap<String, i64>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (a, n) = p.split_once('=').ok_or_else(|| format!("{p:?} is not ACCOUNT=BALANCE"))?;
            let n = n.trim().parse::<i64>().map_err(|e| format!("{p:?}: {e}"))?;
            Ok((a.trim().to_string(), n))
        })
        .collect()
}

/// The balances of the first successful read invoked before any transfer was invoked:
/// nothing can have changed them yet.
fn infer_initial(events: &[Event]) -> Result<BTreeMap<String, i64>, String> {
    let first_transfer =
        events.iter().position(|e| e.f == "transfer" && e.kind == EventType::Invoke).unwrap_or(events.len());
    for (i, e) in events.iter().enumerate().take(first_transfer) {
        if e.f != "read" || e.kind != EventType::Invoke {
            continue;
        }
        let done = events[i + 1..].iter().find(|c| c.process == e.process && c.kind != EventType::Invoke);
        if let Some(c) = done.filter(|c| c.kind == EventType::Ok) {
            if let Some(obj) = c.value.as_object() {
                return obj
                    .iter()
                    .map(|(k, v)| {
                        v.as_i64().map(|v| (k.clone(), v)).ok_or_else(|| format!("balance of {k} is {v}"))
                    })
                    .collect();
            }
        }
    }
    Err("no read before the first transfer to take the initial balances from; pass --bank-initial".into())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}
