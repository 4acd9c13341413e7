//! Progress of long operations, per table: rows, bytes, rate and ETA. On a terminal the lines
//! are redrawn in place a few times a second (indicatif draws them); otherwise (a script, a log
//! file) a plain line per running table every ten seconds, and one when a table finishes.

use std::io::{IsTerminal, Write};

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
    /// A note shown after the table finishes (e.g. "12 rows deleted").
    note: Mutex<String>,
}

impl Task {
    pub fn new(name: String, rows_estimate: u64, bytes_estimate: u64) -> Arc<Task> {
        Arc::new(Task {
            name,
            rows_estimate,
            bytes_estimate,
            counter: Counter::default(),
            phase: Mutex::new(Phase::Waiting),
            note: Mutex::new(String::new()),
        })
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

    pub fn done(&self, note: String) {
        let started = match self.phase() {
            Phase::Running(t) | Phase::Finishing(t) => t,
            _ => Instant::now(),
        };
        *self.note.lock().expect("progress lock") = note;
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
                let note = self.note.lock().expect("progress lock").clone();
                format!(
                    "{name}  done     {rows:>11} rows {:>10}  in {:>6.1}s  {:>10} rows/s{}{note}",
                    human_bytes(bytes),
                    d.as_secs_f64(),
                    rate(rows, d),
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
                    "{name}  copying  {rows:>11} rows {:>10}  {:>10} rows/s",
                    human_bytes(bytes),
                    rate(rows, elapsed)
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

fn rate(rows: u64, d: Duration) -> u64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        (rows as f64 / s) as u64
    } else {
        0
    }
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

/// Draws the tasks: one indicatif line each on a terminal, plain lines otherwise.
struct Painter {
    tasks: Vec<Arc<Task>>,
    width: usize,
    /// On a terminal: one line per task, redrawn in place.
    bars: Option<(MultiProgress, Vec<ProgressBar>)>,
    last_plain: Instant,
    /// Tasks whose final line was printed (plain mode).
    reported: Vec<bool>,
}

impl Painter {
    fn new(tasks: Vec<Arc<Task>>, tty: bool) -> Painter {
        let width = tasks.iter().map(|t| t.name.len()).max().unwrap_or(0);
        let n = tasks.len();
        let bars = tty.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_spinner());
            let bars = tasks
                .iter()
                .map(|t| {
                    let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                    bar.set_message(t.line(width));
                    bar
                })
                .collect();
            (multi, bars)
        });
        Painter {
            tasks,
            width,
            bars,
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
        let Some((_, bars)) = &self.bars else { return };
        for (t, bar) in self.tasks.iter().zip(bars) {
            bar.set_message(t.line(self.width));
            if last {
                bar.finish();
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
