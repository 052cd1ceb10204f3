//! The live view of `parti demo` on a terminal: a table of the workers (id, state, leader mark,
//! partition count and weight, term, version) above the newest lines of the event log, redrawn
//! ten times a second on the alternate screen. The script and the ledger are the same as in
//! plain mode; only where the lines go differs.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::{cursor, queue, terminal};
use parking_lot::Mutex;
use parti_runtime::Manager;

use super::ledger::Ledger;

/// The workers running now, by id, as the renderer reads them.
pub(super) type Board = Arc<Mutex<BTreeMap<u32, (String, Manager)>>>;

/// Restores the terminal when dropped (end of the demo, an error, or Ctrl-C).
pub(super) struct Screen {
    raw: bool,
}

impl Screen {
    /// Switches to the alternate screen and hides the cursor; with `raw` (interactive), also
    /// to raw mode, so that each key arrives at once, without Enter.
    pub(super) fn enter(raw: bool) -> io::Result<Screen> {
        let mut out = io::stdout();
        queue!(out, terminal::EnterAlternateScreen, cursor::Hide)?;
        out.flush()?;
        if raw {
            terminal::enable_raw_mode()?;
        }
        Ok(Screen { raw })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if self.raw {
            let _ = terminal::disable_raw_mode();
        }
        let mut out = io::stdout();
        let _ = queue!(out, cursor::Show, terminal::LeaveAlternateScreen);
        let _ = out.flush();
    }
}

/// What the header says.
pub(super) struct Title {
    pub(super) partitions: usize,
    pub(super) strategy: String,
    pub(super) start: Instant,
    /// The key help of `--interactive`.
    pub(super) keys: Option<&'static str>,
}

/// Redraws until aborted.
pub(super) async fn render(
    title: Title,
    board: Board,
    ledger: Arc<Ledger>,
    log: Arc<Mutex<Vec<String>>>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let lines = frame(&title, &board, &ledger, &log);
        if draw(&lines).is_err() {
            return;
        }
    }
}

fn frame(title: &Title, board: &Board, ledger: &Ledger, log: &Mutex<Vec<String>>) -> Vec<String> {
    let snap = ledger.snapshot(Instant::now());
    let workers: Vec<(String, parti_runtime::Status)> = board
        .lock()
        .values()
        .map(|(name, m)| (name.clone(), m.status()))
        .collect();
    let term = workers
        .iter()
        .find_map(|(_, s)| s.term)
        .map_or_else(|| "-".to_owned(), |t| t.to_string());
    let mut lines = vec![
        format!(
            "parti demo — {} partitions, strategy {}, embedded store   {:.1}s",
            title.partitions,
            title.strategy,
            title.start.elapsed().as_secs_f64()
        ),
        format!(
            "term {term}   highest fence {}   owned {}/{}   moves {}   two owners: {}",
            snap.highest_fence,
            snap.owned,
            title.partitions,
            snap.moves,
            if snap.violations.is_empty() {
                "never".to_owned()
            } else {
                format!("{} TIMES", snap.violations.len())
            }
        ),
        title.keys.unwrap_or_default().to_owned(),
        format!(
            "  {:<10} {:<18} {:<6} {:>10} {:>7} {:>5} {:>8}",
            "WORKER", "STATE", "LEADER", "PARTITIONS", "WEIGHT", "TERM", "VERSION"
        ),
    ];
    for (name, s) in &workers {
        let held = snap.holdings.get(name).cloned().unwrap_or_default();
        lines.push(format!(
            "  {:<10} {:<18} {:<6} {:>10} {:>7} {:>5} {:>8}",
            name,
            s.state.to_string(),
            if s.is_leader { "*" } else { "" },
            held.count,
            held.weight,
            s.term.map_or_else(|| "-".to_owned(), |t| t.to_string()),
            s.version.to_string(),
        ));
    }
    lines.push(String::new());
    lines.push("events".to_owned());
    let rows = terminal::size().map_or(24, |(_, r)| usize::from(r));
    let room = rows.saturating_sub(lines.len() + 1).max(1);
    let log = log.lock();
    lines.extend(log.iter().skip(log.len().saturating_sub(room)).cloned());
    lines
}

fn draw(lines: &[String]) -> io::Result<()> {
    let cols = terminal::size().map_or(80, |(c, _)| usize::from(c));
    let mut out = io::stdout();
    queue!(out, cursor::MoveTo(0, 0))?;
    for line in lines {
        let cut: String = line.chars().take(cols.saturating_sub(1)).collect();
        queue!(
            out,
            crossterm::style::Print(cut),
            terminal::Clear(terminal::ClearType::UntilNewLine),
            crossterm::style::Print("\r\n")
        )?;
    }
    queue!(out, terminal::Clear(terminal::ClearType::FromCursorDown))?;
    out.flush()
}
