//! Progress of long operations, per table: rows, bytes, rate and ETA. On a terminal the lines
//! are redrawn in place a few times a second (indicatif draws them): a line per table for a
//! few tables; for more, an overall bar with the tables in progress under it (a line each for
//! thousands of tables would not fit any screen). Otherwise (a script, a log file) a plain
//! line per running table every ten seconds, and one when a table finishes.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::transfer::Counter;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Waiting,
    Running(Instant),
    /// Loaded, now being applied on blue (no more bytes flow).
    Finishing(Instant),
    Done(Duration),
    Failed,
}

/// One table's progress.
pub struct Task {
    pub name: String,
    /// Estimates from green's statistics (0 when unknown).
    pub rows_estimate: u64,
    pub bytes_estimate: u64,
    pub counter: Counter,
    phase: Mutex<Phase>,
    /// Blue rows deleted because green lacks them, over every part.
    deleted: AtomicU64,
    /// A keyless blue table's rows were replaced (those are the deleted ones).
    replaced: AtomicBool,
    /// How the rows went (e.g. "direct, binary"), for the summary.
    route: Mutex<String>,
    /// The parts the table was cut into (e.g. "4 key ranges"), for the summary.
    parts: Mutex<String>,
}

impl Task {
    pub fn new(name: String, rows_estimate: u64, bytes_estimate: u64) -> Arc<Task> {
        Arc::new(Task {
            name,
            rows_estimate,
            bytes_estimate,
            counter: Counter::default(),
            phase: Mutex::new(Phase::Waiting),
            deleted: AtomicU64::new(0),
            replaced: AtomicBool::new(false),
            route: Mutex::new(String::new()),
            parts: Mutex::new(String::new()),
        })
    }

    /// Names the parts the table is cut into (nothing for one).
    pub fn set_parts(&self, parts: String) {
        *self.parts.lock().expect("progress lock") = parts;
    }

    /// How the table's rows go; parts that went differently are all named.
    pub fn set_route(&self, route: String) {
        let mut current = self.route.lock().expect("progress lock");
        if current.is_empty() {
            *current = route;
        } else if !current.split("; ").any(|r| r == route) {
            current.push_str("; ");
            current.push_str(&route);
        }
    }

    /// Counts blue rows a part deleted (`replaced`: a keyless table's old rows).
    pub fn deleted(&self, rows: u64, replaced: bool) {
        self.deleted.fetch_add(rows, Ordering::Relaxed);
        if replaced {
            self.replaced.store(true, Ordering::Relaxed);
        }
    }

    /// What the table's line says after it finishes, about blue rows deleted.
    fn note(&self) -> String {
        match (
            self.deleted.load(Ordering::Relaxed),
            self.replaced.load(Ordering::Relaxed),
        ) {
            (n, true) => format!("{n} old blue rows replaced"),
            (0, false) => String::new(),
            (n, false) => format!("{n} blue rows not on green deleted"),
        }
    }

    /// The summary's line for a finished table: rows, bytes, time, rates and route.
    pub fn summary(&self, width: usize) -> String {
        let (rows, bytes) = (self.counter.rows(), self.counter.bytes());
        let took = match self.phase() {
            Phase::Done(d) => d,
            _ => Duration::ZERO,
        };
        let parts = self.parts.lock().expect("progress lock");
        let note = self.note();
        format!(
            "{:<width$}  {rows:>11} rows {:>10}  in {:>6.1}s  {}  {}{}{parts}{}{note}",
            self.name,
            human_bytes(bytes),
            took.as_secs_f64(),
            rates(rows, bytes, took),
            self.route.lock().expect("progress lock"),
            if parts.is_empty() { "" } else { ", in " },
            if note.is_empty() { "" } else { "; " },
        )
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().expect("progress lock") = phase;
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().expect("progress lock")
    }

    /// Marks the task running, unless it already is (a table copied in parts).
    pub fn start_once(&self) {
        let mut phase = self.phase.lock().expect("progress lock");
        if *phase == Phase::Waiting {
            *phase = Phase::Running(Instant::now());
        }
    }

    /// Data is loaded; blue is applying it (upsert, index updates).
    pub fn finishing(&self) {
        if let Phase::Running(t) = self.phase() {
            self.set(Phase::Finishing(t));
        }
    }

    pub fn done(&self) {
        let started = match self.phase() {
            Phase::Running(t) | Phase::Finishing(t) => t,
            _ => Instant::now(),
        };
        self.set(Phase::Done(started.elapsed()));
    }

    pub fn failed(&self) {
        self.set(Phase::Failed);
    }

    fn line(&self, width: usize) -> String {
        let rows = self.counter.rows();
        let bytes = self.counter.bytes();
        let name = format!("{:<width$}", self.name);
        match self.phase() {
            Phase::Waiting => format!("{name}  waiting"),
            Phase::Failed => format!("{name}  failed after {rows} rows"),
            Phase::Done(d) => {
                let note = self.note();
                format!(
                    "{name}  done     {rows:>11} rows {:>10}  in {:>6.1}s  {}{}{note}",
                    human_bytes(bytes),
                    d.as_secs_f64(),
                    rates(rows, bytes, d),
                    if note.is_empty() { "" } else { "  " },
                )
            }
            Phase::Finishing(t) => format!(
                "{name}  applying {rows:>11} rows {:>10}  for {:>5.1}s",
                human_bytes(bytes),
                t.elapsed().as_secs_f64()
            ),
            Phase::Running(t) => {
                let elapsed = t.elapsed();
                let mut text = format!(
                    "{name}  copying  {rows:>11} rows {:>10}  {}",
                    human_bytes(bytes),
                    rates(rows, bytes, elapsed)
                );
                // ETA from bytes when green's size is known (row estimates go stale faster).
                let secs = elapsed.as_secs_f64();
                if self.bytes_estimate > bytes && bytes > 0 && secs > 0.5 {
                    let eta = (self.bytes_estimate - bytes) as f64 / (bytes as f64 / secs);
                    text.push_str(&format!("  ETA {}", human_duration(eta)));
                }
                if self.rows_estimate > 0 {
                    text.push_str(&format!("  (~{} rows)", self.rows_estimate));
                }
                text
            }
        }
    }
}

fn rate(n: u64, d: Duration) -> u64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        (n as f64 / s) as u64
    } else {
        0
    }
}

/// `1234567 rows/s   12.3 MB/s`: rows and bytes moved per second over `d`.
pub fn rates(rows: u64, bytes: u64, d: Duration) -> String {
    format!("{:>10} rows/s {:>10}/s", rate(rows, d), human_bytes(rate(bytes, d)))
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The overall line: a bar of tables done, how many are in progress, rows and bytes so far.
fn overall(tasks: &[Arc<Task>], elapsed: Duration) -> String {
    const WIDTH: usize = 30;
    let (mut done, mut running, mut failed, mut rows, mut bytes) = (0usize, 0usize, 0usize, 0u64, 0u64);
    for t in tasks {
        match t.phase() {
            Phase::Done(_) => done += 1,
            Phase::Failed => failed += 1,
            Phase::Running(_) | Phase::Finishing(_) => running += 1,
            Phase::Waiting => {}
        }
        rows += t.counter.rows();
        bytes += t.counter.bytes();
    }
    let total = tasks.len().max(1);
    let filled = (done + failed) * WIDTH / total;
    let mut line = format!(
        "[{}{}] {done}/{} tables done, {running} in progress",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        tasks.len()
    );
    if failed > 0 {
        line.push_str(&format!(", {failed} failed"));
    }
    line.push_str(&format!(
        "  {rows} rows {}  {:.1}s",
        human_bytes(bytes),
        elapsed.as_secs_f64()
    ));
    line
}

fn human_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// How often the display wakes: a terminal is redrawn then, finished tables are printed.
const TICK: Duration = Duration::from_millis(250);
/// Without a terminal, running tables get a line this often.
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// Up to this many tables, a terminal shows a line per table; beyond, an overall bar.
const EACH_UP_TO: usize = 16;
/// Tables in progress shown under the overall bar.
const SHOWN_RUNNING: usize = 8;

/// Draws the tasks on stderr until dropped (the final state is drawn then).
pub struct Display {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Display {
    pub fn start(tasks: Vec<Arc<Task>>) -> Display {
        let tty = std::io::stderr().is_terminal();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(async move {
            let mut painter = Painter::new(tasks, tty);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(TICK) => {}
                }
                painter.tick();
            }
            painter.finish();
        });
        Display {
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Stops drawing after a last update.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

/// What a terminal shows.
enum Bars {
    /// A line per task.
    Each(Vec<ProgressBar>),
    /// An overall line, then the first tasks in progress.
    Overall {
        total: ProgressBar,
        running: Vec<ProgressBar>,
    },
}

/// Draws the tasks: indicatif lines on a terminal, plain lines otherwise.
struct Painter {
    tasks: Vec<Arc<Task>>,
    width: usize,
    bars: Option<(MultiProgress, Bars)>,
    started: Instant,
    last_plain: Instant,
    /// Tasks whose final line was printed (plain mode, and failures under an overall bar).
    reported: Vec<bool>,
}

impl Painter {
    fn new(tasks: Vec<Arc<Task>>, tty: bool) -> Painter {
        let n = tasks.len();
        // Under an overall bar only tables in progress are shown, named as they are.
        let width = if n <= EACH_UP_TO {
            tasks.iter().map(|t| t.name.len()).max().unwrap_or(0)
        } else {
            0
        };
        let bars = tty.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_spinner());
            let line = |msg: String| {
                let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                bar.set_message(msg);
                bar
            };
            let bars = if n <= EACH_UP_TO {
                Bars::Each(tasks.iter().map(|t| line(t.line(width))).collect())
            } else {
                Bars::Overall {
                    total: line(overall(&tasks, Duration::ZERO)),
                    running: (0..SHOWN_RUNNING).map(|_| line(String::new())).collect(),
                }
            };
            (multi, bars)
        });
        Painter {
            tasks,
            width,
            bars,
            started: Instant::now(),
            last_plain: Instant::now(),
            reported: vec![false; n],
        }
    }

    fn tick(&mut self) {
        if self.bars.is_some() {
            self.redraw(false);
        } else {
            self.plain(self.last_plain.elapsed() >= PLAIN_EVERY);
        }
    }

    fn redraw(&mut self, last: bool) {
        let Some((multi, bars)) = &self.bars else { return };
        match bars {
            Bars::Each(bars) => {
                for (t, bar) in self.tasks.iter().zip(bars) {
                    bar.set_message(t.line(self.width));
                    if last {
                        bar.finish();
                    }
                }
            }
            Bars::Overall { total, running } => {
                // Failures stay on screen, above the bars.
                for (t, reported) in self.tasks.iter().zip(self.reported.iter_mut()) {
                    if t.phase() == Phase::Failed && !*reported {
                        *reported = true;
                        let _ = multi.println(t.line(self.width));
                    }
                }
                total.set_message(overall(&self.tasks, self.started.elapsed()));
                let mut active = self
                    .tasks
                    .iter()
                    .filter(|t| matches!(t.phase(), Phase::Running(_) | Phase::Finishing(_)));
                for bar in running {
                    bar.set_message(active.next().map(|t| format!("  {}", t.line(0))).unwrap_or_default());
                    if last {
                        bar.finish_and_clear();
                    }
                }
                if last {
                    total.finish();
                }
            }
        }
        if last {
            // indicatif leaves the cursor at the end of its last line; what is printed next
            // starts on a line of its own.
            eprintln!();
        }
    }

    /// Finished tasks once each; running ones when `periodic`.
    fn plain(&mut self, periodic: bool) {
        let mut err = std::io::stderr().lock();
        for (i, t) in self.tasks.iter().enumerate() {
            match t.phase() {
                Phase::Done(_) | Phase::Failed if !self.reported[i] => {
                    self.reported[i] = true;
                    let _ = writeln!(err, "{}", t.line(self.width));
                }
                Phase::Running(_) | Phase::Finishing(_) if periodic => {
                    let _ = writeln!(err, "{}", t.line(self.width));
                }
                _ => {}
            }
        }
        if periodic {
            self.last_plain = Instant::now();
        }
    }

    fn finish(&mut self) {
        if self.bars.is_some() {
            self.redraw(true);
        } else {
            self.plain(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overall_line_counts_tables_by_phase() {
        let tasks: Vec<Arc<Task>> = (0..4).map(|i| Task::new(format!("s.t{i}"), 0, 0)).collect();
        tasks[0].start_once();
        tasks[0].counter.rows.store(10, std::sync::atomic::Ordering::Relaxed);
        tasks[0].done();
        tasks[1].start_once();
        tasks[2].failed();
        let line = overall(&tasks, Duration::from_secs(2));
        assert!(
            line.starts_with(&format!(
                "[{}{}] 1/4 tables done, 1 in progress, 1 failed",
                "#".repeat(15),
                "-".repeat(15)
            )),
            "{line}"
        );
        assert!(line.contains("10 rows"), "{line}");
    }
}
