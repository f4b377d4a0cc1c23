//! `authz-agent run`: the daemon.
//!
//! Start-up order, chosen so that no exec is ever decided by a half-built state:
//! 1. read the config and the store (a corrupt revocation list is fatal: it
//!    would let revoked artifacts back in);
//! 2. load the BPF object, reusing pinned maps when a previous run left them
//!    (the old programs keep enforcing meanwhile);
//! 3. re-verify every stored artifact and make the permit map match;
//! 4. attach the programs and swap the pinned links (no gap), self-test;
//! 5. open the control socket, tell systemd we are ready.
//!
//! SIGHUP reloads the config ([`reload`]); under `WatchdogSec=` the main loop
//! pings systemd's watchdog ([`systemd`]).
//!
//! Stopping (SIGTERM) leaves the pinned programs enforcing: the daemon's death
//! never opens a window. `authz-agent unload` removes them on purpose.
mod agent;
mod decisions;
mod dropped;
pub mod inbox;
pub mod index;
mod laps;
pub mod loader;
pub mod lockdown;
pub mod metrics;
mod ops;
pub mod permits;
mod queries;
pub mod reload;
mod report;
mod revocation_lists;
mod revocations;
pub mod sequence;
pub mod systemd;
pub mod textfile;
pub mod why;

use std::{path::Path, time::SystemTime};

use anyhow::Context as _;
use tokio::sync::mpsc;

pub use agent::{Agent, Refusal};
pub use permits::PermitState;

use crate::{
    cgroup::Hierarchy,
    config::Config,
    control::{
        access::Access,
        protocol::{Reply, Request, Response},
        server::{self, Call},
    },
    enforcer::{self, Enforcer, LoadOptions},
    store::Store,
    trust::Verifier,
};

/// Runs the daemon until SIGTERM or SIGINT. `unlock`: a signed statement
/// ending lockdown (needed to start with another configuration while the
/// kernel is locked down).
pub fn run(config_path: &Path, unlock: Option<&Path>) -> anyhow::Result<()> {
    let mut startup = laps::Laps::start();
    // The kernel first: on a host that cannot enforce, that is the one thing
    // to say, whatever the config.
    if let Err(e) = Enforcer::probe() {
        // Under lockdown the kernel refuses program loads to anything but
        // recorded agent code: that, not the kernel, is then the reason.
        if let Ok(config) = Config::load(config_path) {
            if enforcer::locked_out(&config.agent.pin_dir) {
                return Err(enforcer::not_an_agent().into());
            }
        }
        return Err(anyhow::Error::new(e).context("authz cannot enforce on this host"));
    }
    startup.lap("probe");
    let config = Config::load(config_path)?;
    let unlock = unlock.map(lockdown::read_statement).transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, unlock, startup))
}

#[tracing::instrument(name = "daemon", skip_all, fields(config = %config.path.display()))]
async fn serve(
    mut config: Config,
    unlock: Option<crate::vocab::statement::Statement>,
    mut startup: laps::Laps,
) -> anyhow::Result<()> {
    let a = &config.agent.clone();
    let store = Store::open(&a.state_dir)?;
    let mut revoked = store
        .revocations()
        .context("refusing to start without a readable revocation list")?;
    let hierarchy = Hierarchy::open(&a.cgroup_root)?;
    for cg in &a.enforce_cgroups {
        if hierarchy.id(cg).is_err() {
            tracing::info!(cgroup = %cg, "enforced cgroup does not exist yet; the kernel enforces it as soon as it does");
        }
    }
    let opts = LoadOptions {
        mode: store.mode()?.unwrap_or(a.mode),
        cgroup_root: a.cgroup_root.clone(),
        max_permits: a.max_permits,
        enforced_paths: a.enforce_cgroups.clone(),
        trusted_filesystems: a.trusted_filesystems.clone(),
        allowed_sample: config.audit.allowed.kernel_value(),
        libraries: a.libraries,
        exec_memory: a.exec_memory,
        pin_dir: Some(a.pin_dir.clone()),
        lockdown: a.lockdown,
        admission: Some(enforcer::Admission {
            config_path: config.path.clone(),
            config_digest: config.digest,
            unlock,
        }),
        ..LoadOptions::default()
    };
    startup.lap("config");
    let mut enforcer = Enforcer::open(&opts).context("cannot start enforcement")?;
    startup.lap("open");
    let restored = lockdown::restore_kernel_revocations(&enforcer, &mut revoked, SystemTime::now());
    if restored > 0 {
        tracing::warn!(
            restored,
            "revocations the state directory had lost came back from the kernel's copy"
        );
        store
            .save_revocations(&revoked, crate::artifact::time::Timestamp::now())
            .context("cannot write the revocation list back")?;
    }
    let ima = &enforcer.kernel().ima;
    if ima.active {
        tracing::info!(
            boot_policy = ima.boot_policy.as_deref().unwrap_or("-"),
            measurements = ima.measurements,
            "IMA measures files and caches their hashes: an exec of a file whose size changed \
             without a writer while IMA held a measurement of it is refused (digest-stale)"
        );
    }
    if let Some(mode) = store.mode()? {
        if enforcer.mode() != mode {
            if enforcer.lockdown() && lockdown::weaker(enforcer.mode(), mode) {
                tracing::warn!(
                    stored = %mode,
                    kernel = %enforcer.mode(),
                    "the state directory asks for a lower mode; lockdown keeps the kernel's"
                );
            } else {
                enforcer.set_mode(mode)?;
            }
        }
    }
    let access = Access::new(a.socket_group.as_deref(), a.admin_group.as_deref())?;
    let audit_key = crate::audit::writer::load_or_create_key(&a.state_dir)?;
    let au = &config.audit;
    let audit = crate::audit::AuditLog::open(
        crate::audit::AuditConfig {
            path: au.log.clone(),
            rotate_bytes: au.rotate_bytes,
            checkpoint_every: au.checkpoint_interval,
            host: au.host.clone().unwrap_or_else(hostname),
        },
        audit_key,
    )?;
    let recovered = audit.recovered_bytes;
    let host = crate::trust::HostIdentity::local(&a.host_labels);
    tracing::info!(%host, "this host, for permits bound to hosts");
    let mut agent = Agent::new(
        enforcer,
        store,
        Verifier::for_host(config.trust.clone(), host),
        hierarchy,
        revoked,
        audit,
    );
    if recovered > 0 {
        agent.admin("log-recovered", serde_json::json!({ "truncated_bytes": recovered, "why": "a record was half-written when the agent last stopped" }));
    }
    if restored > 0 {
        agent.admin(
            "tamper",
            serde_json::json!({ "object": "revocations", "found": "the state directory's list lacked revocations the kernel keeps", "restored": restored }),
        );
    }
    match index::IndexKey::load_or_create(&a.state_dir) {
        Ok(key) => agent.use_index(key),
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "no verified index: every start verifies every stored artifact in full");
        }
    }
    startup.lap("setup");
    let now = SystemTime::now();
    agent.load_store(now)?;
    startup.lap("store");
    agent.reconcile(now)?;
    startup.lap("reconcile");
    agent
        .enforcer
        .attach(&opts)
        .context("cannot start enforcement")?;
    startup.lap("attach");
    agent.mirror_revocations();
    if let Some(u) = agent.enforcer.unlocked_at_start().cloned() {
        agent.admin("lockdown-end", serde_json::json!({ "statement_id": u.statement_id, "issuer": u.issuer, "at": "start" }));
    }
    lockdown::begin_if_wanted(&mut agent, &config)?;
    let ledger = dropped::Ledger::new(&a.state_dir).context("cannot read this boot's id")?;
    agent.admin(
        "start",
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "mode": agent.enforcer.mode(),
            "kernel": agent.enforcer.kernel().release,
            "adopted_pinned_state": agent.enforcer.adopted(),
            "enforced_cgroups": agent.enforcer.scope_paths(),
            "ima": agent.enforcer.kernel().ima,
            "event_epoch": format!("{:016x}", agent.enforcer.epoch()),
            "lockdown": agent.enforcer.lockdown(),
            "host": agent.verifier.host().to_string(),
            "config": config.path,
        }),
    );

    agent.account_dropped_while_down(ledger);
    agent.start_sequence();
    report_delegated_cgroups(&mut agent, &a.cgroup_root, &a.enforce_cgroups);

    let mut inbox = match &a.inbox_dir {
        Some(dir) => Some(inbox::Inbox::open(dir, &a.state_dir, &mut agent)?),
        None => None,
    };

    let listener = server::bind(&a.socket, &access).await?;
    let (calls_tx, mut calls) = mpsc::channel::<Call>(1024);
    tokio::spawn(server::serve(listener, access.clone(), calls_tx));

    // Decisions the kernel made while no daemon was running wait in the pinned
    // ring buffer: take them first.
    for ev in agent.enforcer.drain_events() {
        agent.on_event(ev);
    }
    agent.events_written();
    let ring = agent
        .enforcer
        .take_event_ring()
        .context("event ring already taken")?;
    agent.metrics.watch_ring(
        &ring,
        opts.event_ring_bytes
            .unwrap_or(enforcer::DEFAULT_RING_BYTES),
    );
    let mut textfile = ops::Textfile::new(&config.metrics);
    // SAFETY: the ring buffer owns its map fd and the AsyncFd owns the ring
    // buffer, so the fd stays open for as long as it is registered.
    let mut ring = unsafe { tokio::io::unix::AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("cannot watch the event ring: {e}"))?;
    let mut timers = Timers::new(&config);
    let mut audit_tick = tokio::time::interval(std::time::Duration::from_millis(500));
    // Allowed execs are queued by the kernel without a wakeup: drain on a timer.
    let mut drain = tokio::time::interval(std::time::Duration::from_millis(100));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let watchdog = systemd::Watchdog::from_env();
    // Without a watchdog the tick still runs, rarely, and pings nothing.
    let mut watchdog_tick = tokio::time::interval(
        watchdog.map_or(std::time::Duration::from_secs(3600), |w| w.interval()),
    );
    if let Some(w) = watchdog {
        tracing::info!(timeout = ?w.timeout, every = ?w.interval(), "systemd watchdog: pinging from the main loop");
    }

    startup.lap("serve");
    tracing::info!(
        mode = %agent.enforcer.mode(),
        socket = %a.socket.display(),
        adopted = agent.enforcer.adopted(),
        startup_ms = %startup,
        "authz-agent enforcing"
    );
    systemd::ready(&status_line(&agent));

    loop {
        // Wake when the next scheduled artifact's window opens.
        let now = SystemTime::now();
        let next_start = agent
            .next_start(now)
            .and_then(|t| t.duration_since(now).ok())
            .unwrap_or(std::time::Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep(next_start) => agent.activate_due(SystemTime::now()),
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            Some(call) = calls.recv() => {
                let revoking = matches!(
                    call.request,
                    Request::Revoke { .. } | Request::RevokeAll { .. } | Request::RevocationList { .. }
                );
                if let Some(call) = ops::offload(&mut agent, &access, call) {
                    let response = handle(&mut agent, &access, call.request, &call.peer, SystemTime::now());
                    let _ = call.reply.send(response);
                }
                if revoking {
                    if let Some(inbox) = inbox.as_mut() {
                        inbox.refresh(&mut agent);
                    }
                }
            }
            _ = inbox_wait(&mut inbox) => {
                if let Some(inbox) = inbox.as_mut() {
                    inbox.turn(&mut agent, SystemTime::now());
                }
            }
            _ = textfile.tick(), if textfile.enabled() => textfile.write(&agent),
            _ = audit_tick.tick() => agent.audit_tick(),
            _ = drain.tick() => {
                while let Some(item) = ring.get_mut().next() {
                    if let Some(ev) = enforcer::event::decode(&item) {
                        agent.on_event(ev);
                    }
                }
                agent.events_written();
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.context("event ring")?;
                while let Some(item) = guard.get_inner_mut().next() {
                    if let Some(ev) = enforcer::event::decode(&item) {
                        agent.on_event(ev);
                    }
                }
                guard.clear_ready();
                agent.events_written();
            }
            _ = timers.poll.tick() => agent.poll_cgroups(SystemTime::now()),
            _ = timers.sweep.tick() => {
                agent.sweep(SystemTime::now());
                if let Some(inbox) = inbox.as_mut() {
                    inbox.refresh(&mut agent);
                }
            }
            _ = timers.integrity.tick() => {
                agent.check_integrity();
            }
            _ = watchdog_tick.tick() => {
                if let Some(w) = &watchdog {
                    w.ping_if_healthy(&agent);
                }
            }
            _ = sighup.recv() => {
                systemd::reloading();
                let before = (config.agent.cgroup_poll, config.agent.sweep_interval, config.agent.tamper_check);
                let outcome = reload_config(&mut agent, &mut config);
                if let Some(inbox) = inbox.as_mut() {
                    inbox.retry_refused(&agent);
                }
                if before != (config.agent.cgroup_poll, config.agent.sweep_interval, config.agent.tamper_check) {
                    timers = Timers::new(&config);
                }
                systemd::reloaded(&format!("{}; {outcome}", status_line(&agent)));
            }
        }
    }
    systemd::stopping();
    tracing::info!("stopping; the pinned programs keep enforcing");
    for ev in agent.enforcer.drain_events() {
        agent.on_event(ev);
    }
    agent.events_written();
    agent.audit_tick();
    agent.admin(
        "stop",
        serde_json::json!({ "mode": agent.enforcer.mode(), "enforcement": "continues (pinned)" }),
    );
    if let Some(inbox) = inbox.as_mut() {
        inbox.save(&agent);
    }
    agent.save_observed_time(SystemTime::now());
    agent.save_index(true);
    agent.audit_checkpoint("stop");
    let _ = std::fs::remove_file(&a.socket);
    Ok(())
}

/// Waits for the inbox, if there is one, to have files to take in.
async fn inbox_wait(inbox: &mut Option<inbox::Inbox>) {
    match inbox {
        Some(inbox) => inbox.wait().await,
        None => std::future::pending().await,
    }
}

/// Runs one control request against the agent if `access` gives the peer the
/// role it needs; every request that changes something is recorded in the
/// decision log, accepted or refused (for the peer's role included).
pub fn handle(
    agent: &mut Agent,
    access: &Access,
    request: Request,
    peer: &server::Peer,
    now: SystemTime,
) -> Response {
    // A submit's id comes from its answer when accepted: parsing the text a
    // second time just for the record cost a submit a tenth of its time.
    let submitted = match &request {
        Request::Submit { artifact } => Some(artifact.clone()),
        _ => None,
    };
    let logged = match &request {
        Request::Submit { artifact } => {
            Some(("submit", serde_json::json!({ "bytes": artifact.len() })))
        }
        Request::Revoke { id, reason } => {
            Some(("revoke", serde_json::json!({ "id": id, "reason": reason })))
        }
        Request::RevokeAll { reason } => {
            Some(("revoke-all", serde_json::json!({ "reason": reason })))
        }
        Request::RevocationList { list } => Some((
            "revocation-list",
            serde_json::json!({
                "list": crate::revocation_list::RevocationList::parse(list)
                    .ok()
                    .map(|l| serde_json::json!({ "signer": l.issuer.to_string(), "serial": l.serial, "ids": l.revoked.len() })),
                "bytes": list.len(),
            }),
        )),
        Request::SetMode { mode } => Some(("mode", serde_json::json!({ "mode": mode }))),
        Request::Unlock { statement } => Some((
            "lockdown-unlock",
            serde_json::json!({ "statement_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(statement.as_bytes())) }),
        )),
        Request::Adopt { statement } => Some((
            "lockdown-adopt",
            serde_json::json!({ "statement_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(statement.as_bytes())) }),
        )),
        Request::List {}
        | Request::Status {}
        | Request::Report { .. }
        | Request::Metrics { .. }
        | Request::Why { .. } => None,
    };
    let started = std::time::Instant::now();
    let op = request.op();
    let result = match access.authorize(peer, &request) {
        Err(denied) => {
            tracing::warn!(uid = peer.uid, pid = peer.pid, reason = %denied.message, "control request refused");
            Err(denied)
        }
        Ok(_) => execute(agent, request, peer, now),
    };
    ops::account(agent, op, started, result.as_ref().err().map(|r| r.kind));
    if let Some((event, mut request)) = logged {
        if let Some(text) = &submitted {
            let id = match &result {
                Ok(Reply::Submit(r)) => Some(r.id.clone()),
                _ => crate::artifact::Artifact::parse(text)
                    .ok()
                    .map(|a| a.id.to_string()),
            };
            request["artifact_id"] = serde_json::json!(id);
        }
        let outcome = match &result {
            Ok(v) => serde_json::json!({ "ok": true, "result": v }),
            Err(r) => serde_json::json!({ "ok": false, "error": r.kind, "message": r.message }),
        };
        agent.admin(
            event,
            serde_json::json!({ "peer": peer, "role": access.role_of(peer), "request": request, "outcome": outcome }),
        );
    }
    match result {
        Ok(reply) => Response::ok(&reply),
        Err(refusal) => Response::err(refusal.kind, refusal.message),
    }
}

fn execute(
    agent: &mut Agent,
    request: Request,
    peer: &server::Peer,
    now: SystemTime,
) -> Result<Reply, Refusal> {
    agent.activate_due(now);
    Ok(match request {
        Request::Submit { artifact } => Reply::Submit(agent.submit(&artifact, now)?),
        Request::List {} => Reply::List(agent.list(now)),
        Request::Revoke { id, reason } => Reply::Revoke(agent.revoke(&id, reason, now)?),
        Request::RevokeAll { reason } => Reply::RevokeAll(agent.revoke_all(reason, now)?),
        Request::RevocationList { list } => {
            Reply::RevocationList(agent.apply_revocation_list(&list, now)?)
        }
        Request::Status {} => {
            // The kernel's actual state, checked and restored before it is told.
            agent.check_integrity();
            Reply::Status(Box::new(agent.status(now)))
        }
        Request::SetMode { mode } => {
            agent.check_mode_change(mode)?;
            Reply::SetMode(agent.set_mode(mode)?)
        }
        Request::Unlock { statement } => Reply::Unlock(agent.unlock(&statement, now)?),
        Request::Adopt { statement } => Reply::Adopt(agent.adopt(&statement, now)?),
        Request::Report { since: None } => Reply::Report(agent.report()),
        Request::Report { since: Some(since) } => Reply::Report(agent.report_since(&since)?),
        Request::Metrics { format } => Reply::Metrics(crate::control::protocol::MetricsResult {
            format,
            text: agent.metrics_text(format, now),
        }),
        Request::Why { path, cgroup, pid } => Reply::Why(Box::new(agent.why(
            &path,
            ops::target(cgroup, pid)?,
            peer,
            now,
        )?)),
    })
}

/// Names every cgroup on the way to an enforced or permitted one that a
/// non-root user can write (see [`crate::cgroup_writers`]): a warning and a
/// decision-log record each; never fatal.
fn report_delegated_cgroups(agent: &mut Agent, cgroup_root: &Path, enforced: &[String]) {
    let permitted = agent.permitted_cgroups();
    for finding in crate::cgroup_writers::audit(cgroup_root, enforced, &permitted) {
        tracing::warn!(cgroup = %finding.cgroup, "{}", finding.sentence);
        agent.admin("delegated-cgroup", serde_json::json!(finding));
    }
}

fn hostname() -> String {
    nix::sys::utsname::uname()
        .ok()
        .and_then(|u| u.nodename().to_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// The loop's periodic work, at the config's intervals (rebuilt when a
/// reload changes them).
struct Timers {
    poll: tokio::time::Interval,
    sweep: tokio::time::Interval,
    integrity: tokio::time::Interval,
}

impl Timers {
    fn new(config: &Config) -> Self {
        let a = &config.agent;
        Self {
            poll: tokio::time::interval(a.cgroup_poll),
            sweep: tokio::time::interval(a.sweep_interval),
            integrity: tokio::time::interval(a.tamper_check),
        }
    }
}

/// systemd's status line for the unit (`systemctl status`).
fn status_line(agent: &Agent) -> String {
    format!(
        "enforcing programs attached; mode {}",
        agent.enforcer.mode()
    )
}

/// SIGHUP: reloads the config, logs and records the outcome; returns it in
/// a few words for systemd's status line. A refused reload changes nothing.
fn reload_config(agent: &mut Agent, config: &mut Config) -> String {
    let policy_before = agent.log.policy().clone();
    match reload::reload(agent, config, SystemTime::now()) {
        Ok(applied) => {
            tracing::info!(
                config = %config.path.display(),
                applied = ?applied.applied,
                needs_restart = ?applied.needs_restart,
                live_permits_before = applied.live_permits.0,
                live_permits_after = applied.live_permits.1,
                "config reloaded: {}", applied.summary()
            );
            for key in &applied.needs_restart {
                tracing::warn!(key, "this setting changed in the config but only applies after a restart (systemctl restart authz-agent); the old value keeps running");
            }
            let policy = agent.log.policy().clone();
            agent.admin(
                "reload",
                serde_json::json!({
                    "ok": true,
                    "config": config.path,
                    "applied": applied.applied,
                    "needs_restart": applied.needs_restart,
                    "overridden": applied.overridden.iter().map(|(k, why)| serde_json::json!({"key": k, "why": why})).collect::<Vec<_>>(),
                    "live_permits": {"before": applied.live_permits.0, "after": applied.live_permits.1},
                    "policy": {
                        "before": {"version": policy_before.version, "digest": policy_before.digest},
                        "after": {"version": policy.version, "digest": policy.digest},
                    },
                }),
            );
            format!("config reloaded ({})", applied.summary())
        }
        Err(e) => {
            let why = crate::error_chain(&e);
            tracing::error!(config = %config.path.display(), error = %why, "reload refused; the running configuration is unchanged");
            agent.admin(
                "reload",
                serde_json::json!({
                    "ok": false,
                    "config": config.path,
                    "error": why,
                    "running": "unchanged",
                }),
            );
            "reload refused (see the log)".to_owned()
        }
    }
}
