//! A sink in a child process, so a test can really kill it (SIGKILL) and start it
//! again on the same port. The child is the test binary itself, re-run with the test
//! named by `entry` and `LOGSENDER_CHILD_SINK` set; that test calls [`child_main`].

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::sink::{Ending, Sink};

const ENV: &str = "LOGSENDER_CHILD_SINK";

/// A running child-process sink.
pub struct ChildSink {
    child: Option<Child>,
    port: u16,
    record: PathBuf,
    entry: String,
}

impl ChildSink {
    /// Starts a child sink on `port` (0 = any) that appends `agent_id host_id` per
    /// received payload to `record`. `entry` is the name of the test that calls
    /// [`child_main`] in this test binary.
    pub fn spawn(entry: &str, port: u16, record: &Path) -> ChildSink {
        let mut s = ChildSink {
            child: None,
            port,
            record: record.to_path_buf(),
            entry: entry.to_string(),
        };
        s.start();
        s
    }

    fn start(&mut self) {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .args([
                self.entry.as_str(),
                "--exact",
                "--nocapture",
                "--include-ignored",
                "--test-threads=1",
            ])
            .env(ENV, format!("{} {}", self.port, self.record.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child sink");
        let stdout = child.stdout.take().expect("child stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("child sink exited before it was ready")
                .expect("read child stdout");
            // libtest prints `test <name> ... ` without a newline before the test runs,
            // so the marker may follow it on the same line.
            if let Some((_, p)) = line.split_once("SINK-PORT ") {
                break p.trim().parse::<u16>().expect("port");
            }
        };
        self.port = port;
        self.child = Some(child);
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new child on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() of a running child sink");
        self.start();
    }

    /// The lines recorded so far (all children, since they share the file).
    pub fn records(&self) -> Vec<String> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for ChildSink {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The body of the child: when `LOGSENDER_CHILD_SINK` is set, run a sink until killed;
/// otherwise return at once (the entry test is then a no-op).
pub fn child_main() {
    let Ok(spec) = std::env::var(ENV) else {
        return;
    };
    let (port, record) = spec.split_once(' ').expect("child spec");
    let port: u16 = port.parse().expect("child port");
    let sink = Sink::start_with(port, Ending::OkNoMessage, Some(PathBuf::from(record)));
    println!("SINK-PORT {}", sink.port());
    loop {
        std::thread::park();
    }
}
