//! One `tessera` process (a store or a driver replica) inside a node's namespace, which
//! the nemesis kills, restarts, pauses and resumes.
//!
//! A daemon keeps its arguments and data directory across restarts, so a restart is the
//! same node coming back; its output goes to one log file, appended to across restarts.
//! A daemon is killed outright (SIGKILL) when dropped: a chaos run never leaves a
//! process behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use rustix::process::{Pid, Signal, kill_process};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Pd,
    Store,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Pd => "pd",
            Role::Store => "store",
        }
    }
}

pub struct Daemon {
    pub role: Role,
    pub node: usize,
    namespace: String,
    binary: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Daemon {
    pub fn new(
        role: Role,
        node: usize,
        namespace: &str,
        binary: &Path,
        args: Vec<String>,
        log: PathBuf,
    ) -> Daemon {
        Daemon {
            role,
            node,
            namespace: namespace.to_string(),
            binary: binary.to_path_buf(),
            args,
            log,
            child: None,
            paused: false,
        }
    }

    pub fn name(&self) -> String {
        format!("{} n{}", self.role.name(), self.node)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn log_file(&self, event: &str) -> anyhow::Result<File> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        writeln!(file, "==== chaos: {event} {}", self.name())?;
        Ok(file)
    }

    /// Starts the process (a no-op when it runs).
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let out = self.log_file("start")?;
        let err = out.try_clone()?;
        // `ip netns exec` enters the namespace and execs the binary: the child's pid is
        // the daemon's own.
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespace]).arg(&self.binary).args(&self.args);
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: the closure only makes a system call that is safe between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // A daemon dies with the run, however the run ends (a signal skips the
                // destructors that would kill it); the setting survives `ip`'s exec.
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| format!("starting {}", self.name()))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let Some(child) = &self.child else { return Ok(()) };
        let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw).context("a child's pid")?;
        kill_process(pid, signal).with_context(|| format!("signalling {}", self.name()))
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = self.log_file("kill -9");
            child.kill().with_context(|| format!("killing {}", self.name()))?;
            child.wait()?;
        }
        self.paused = false;
        Ok(())
    }

    /// SIGSTOP: the process stays, frozen, with its connections open.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() && !self.paused {
            let _ = self.log_file("SIGSTOP");
            self.signal(Signal::STOP)?;
            self.paused = true;
        }
        Ok(())
    }

    pub fn resume(&mut self) -> anyhow::Result<()> {
        if self.paused {
            self.signal(Signal::CONT)?;
            let _ = self.log_file("SIGCONT");
            self.paused = false;
        }
        Ok(())
    }

    /// Whether the process exited on its own (a crash), with its status.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status.to_string())
            }
            _ => None,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
