//! Progress for long-running commands: a bar on a terminal, a log line every few
//! seconds otherwise (CI logs, `| tee`), so no run is ever silent.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A progress reporter for one phase of work.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
    last_line: Instant,
    /// Interval between log lines when there is no terminal.
    every: Duration,
}

impl Progress {
    /// Starts a phase of `total` units.
    pub fn new(label: &str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style =
                ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta} left)")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(label.to_string());
            bar
        });
        Progress {
            bar,
            label: label.to_string(),
            started: Instant::now(),
            last_line: Instant::now(),
            every: Duration::from_secs(5),
        }
    }

    /// Reports `done` of `total` units.
    pub fn set(&mut self, done: u64, total: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
            }
            None => {
                if self.last_line.elapsed() >= self.every || done == total {
                    self.last_line = Instant::now();
                    eprintln!(
                        "{}: {done}/{total} ({:.0}%, {:.0} s)",
                        self.label,
                        100.0 * done as f64 / total.max(1) as f64,
                        self.started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }

    /// Ends the phase.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        eprintln!(
            "{}: done in {:.1} s",
            self.label,
            self.started.elapsed().as_secs_f64()
        );
    }
}
