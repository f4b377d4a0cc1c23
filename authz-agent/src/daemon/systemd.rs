//! The daemon's side of systemd's service protocol (sd_notify(3), through
//! the `sd-notify` crate): readiness for `Type=notify`, reloads, stopping, a
//! status line, and watchdog pings for `WatchdogSec=`. Every call is a no-op
//! outside systemd (no `NOTIFY_SOCKET`).
//!
//! The watchdog is pinged from the daemon's main loop, the one task that
//! owns the agent and its loaded BPF object, and only after that loop has
//! just read the kernel's configuration back: an agent whose loop is stuck
//! (a hang, a deadlock, SIGSTOP) or that lost its grip on the kernel's maps
//! stops pinging, and systemd kills and restarts it. The pinned programs
//! keep enforcing meanwhile, so a restart opens nothing.
use std::time::Duration;

use sd_notify::NotifyState;

use super::Agent;

/// Tells systemd the daemon is ready (after the programs are attached and
/// the control socket is open), with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd a reload started. `MONOTONIC_USEC` lets systemd (253+,
/// `Type=notify-reload`) match it with the reload it asked for.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Tells systemd a reload finished (applied or refused: the daemon runs on
/// either way), with a status line.
pub fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// `WatchdogSec=` as systemd passed it (`WATCHDOG_USEC`, for this process).
#[derive(Clone, Copy, Debug)]
pub struct Watchdog {
    /// How long systemd waits for a ping.
    pub timeout: Duration,
}

impl Watchdog {
    /// The watchdog systemd set up for this process, if any.
    pub fn from_env() -> Option<Self> {
        sd_notify::watchdog_enabled()
            .filter(|t| !t.is_zero())
            .map(|timeout| Self { timeout })
    }

    /// How often the main loop pings: well inside the timeout, as
    /// sd_watchdog_enabled(3) advises (half of it), so one slow turn of
    /// the loop does not cost a restart.
    pub fn interval(&self) -> Duration {
        (self.timeout / 2).max(Duration::from_millis(1))
    }

    /// Pings systemd when the agent is healthy; otherwise says why not and
    /// lets systemd's timer run out. Returns whether it pinged.
    pub fn ping_if_healthy(&self, agent: &Agent) -> bool {
        match healthy(agent) {
            Ok(()) => {
                send(&[NotifyState::Watchdog]);
                true
            }
            Err(why) => {
                tracing::error!(reason = %why, "not pinging the systemd watchdog: the agent is not healthy");
                false
            }
        }
    }
}

/// Healthy: the kernel's configuration map still answers the agent (the
/// loaded object is usable). The caller being the main loop is the other
/// half: a loop that does not turn never gets here.
fn healthy(agent: &Agent) -> Result<(), String> {
    agent.enforcer.kernel_config().map(drop).map_err(|e| {
        format!(
            "the kernel's config map does not answer: {}",
            crate::error_chain(&e)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_half_the_timeout() {
        let w = Watchdog {
            timeout: Duration::from_secs(30),
        };
        assert_eq!(w.interval(), Duration::from_secs(15));
        // Never zero: tokio refuses a zero period.
        let w = Watchdog {
            timeout: Duration::from_micros(1),
        };
        assert_eq!(w.interval(), Duration::from_millis(1));
    }
}
