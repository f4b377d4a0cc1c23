//! Running the real `authz-agent` binary as a daemon, and its CLI, in a test.
//!
//! Each [`Daemon`] gets its own state directory, socket, bpffs pin directory
//! and enforced cgroup, so a test that fails half-way cannot leave enforcement
//! on anything but its own cgroup; on drop the daemon is killed and its pinned
//! programs unloaded.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{Scratch, TestCgroups};

/// The entries under a daemon's `pin_dir` whose names start with `prefix`
/// (`link-`: its link pins; `maps-`: its maps directory).
pub fn pins(pin_dir: &Path, prefix: &str) -> Vec<PathBuf> {
    fs::read_dir(pin_dir)
        .expect("pin dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect()
}

/// The directory of the maps a daemon pinned under `pin_dir`
/// (`maps-<layout>`).
pub fn maps_dir(pin_dir: &Path) -> PathBuf {
    pins(pin_dir, "maps-")
        .into_iter()
        .next()
        .expect("a maps-* directory")
}

/// The agent binary under test (set by the runner; the build's by default).
pub fn agent_bin() -> PathBuf {
    std::env::var_os("AUTHZ_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/authz-agent"))
}

/// Runs `cmd` (an `authz-agent` command line), which must succeed.
#[track_caller]
fn succeed(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run authz-agent {what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A root key and the paths of its files.
pub struct Keys {
    pub key: PathBuf,
    pub public_hex: String,
}

/// Generates a key pair with the CLI in `dir`.
pub fn generate_key(dir: &Path, name: &str) -> Keys {
    let base = dir.join(name);
    succeed(
        Command::new(agent_bin())
            .args(["key", "generate", "--out"])
            .arg(&base),
        "key generate",
    );
    let public =
        authz_agent::trust::PublicKey::read(&base.with_extension("pub")).expect("read .pub");
    Keys {
        key: base.with_extension("key"),
        public_hex: hex::encode(public.key.as_bytes()),
    }
}

/// A team key holding a one-link delegation from the root key.
pub struct Team {
    pub keys: Keys,
    /// The delegation file.
    pub delegation: PathBuf,
    /// The id of its link: revoking it revokes everything the team issued.
    pub link_id: String,
}

/// An isolated daemon under test.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    pub log: PathBuf,
    /// The enforced cgroup (path in the hierarchy) and its directory.
    pub cgroup: String,
    pub cgroup_dir: PathBuf,
    pub root: Keys,
    _cgroups: TestCgroups,
    _scratch: Scratch,
}

impl Daemon {
    /// Writes a config trusting a fresh root key for `/`, enforcing a fresh
    /// cgroup `<name>/jail` in `mode`, and starts the daemon.
    pub fn start(name: &str, mode: &str) -> Self {
        Self::start_with(name, mode, "")
    }

    /// As [`Daemon::start`], with extra lines for the `[agent]` table.
    pub fn start_with(name: &str, mode: &str, extra_agent: &str) -> Self {
        crate::require_environment();
        let scratch = Scratch::new(&format!("daemon-{name}"));
        let dir = scratch.dir.clone();
        let mut cgroups = TestCgroups::new(name);
        let (cgroup_dir, _) = cgroups.create("jail");
        let cgroup = format!("{}/jail", cgroups.base);
        let root = generate_key(&dir, "root");
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/authz-test-{name}-{}",
            std::process::id()
        ));
        let socket = dir.join("agent.sock");
        let config = dir.join("agent.toml");
        fs::write(
            &config,
            format!(
                r#"[agent]
mode = "{mode}"
enforce_cgroups = ["{cgroup}"]
state_dir = "{state}"
socket = "{socket}"
pin_dir = "{pin}"
cgroup_poll = "1s"
sweep_interval = "1s"
{extra_agent}

[audit]
log = "{log}"
checkpoint_interval = "1s"

[trust]
version = 1

[[trust.roots]]
name = "test-root"
public_key = "{key}"
cgroup_prefixes = ["/"]
max_ttl = "30d"
"#,
                state = dir.join("state").display(),
                socket = socket.display(),
                pin = pin_dir.display(),
                log = dir.join("log/decisions.jsonl").display(),
                key = root.public_hex,
            ),
        )
        .expect("write config");
        let mut d = Self {
            child: None,
            log: dir.join("agent.log"),
            dir,
            config,
            socket,
            pin_dir,
            cgroup,
            cgroup_dir,
            root,
            _cgroups: cgroups,
            _scratch: scratch,
        };
        d.spawn();
        d
    }

    /// Starts the daemon process and waits until it answers on its socket
    /// (generously: a loaded CI machine can take minutes to load programs).
    pub fn spawn(&mut self) {
        self.spawn_within(Duration::from_secs(240));
    }

    /// Starts the daemon and returns how long it took to answer on its
    /// control socket, which it opens only once the store is verified, every
    /// permit is in the kernel and the programs are attached. Panics after
    /// `limit`, or if the daemon exits first.
    pub fn spawn_within(&mut self, limit: Duration) -> Duration {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let start = Instant::now();
        let child = Command::new(agent_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("AUTHZ_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn authz-agent run");
        self.child = Some(child);
        let status = authz_agent::control::protocol::Request::Status {};
        loop {
            if authz_agent::control::client::call(&self.socket, &status).is_ok() {
                return start.elapsed();
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the daemon exited ({status}) before it was ready:\n{}",
                    self.log_text()
                );
            }
            if start.elapsed() > limit {
                panic!(
                    "the daemon was not ready within {limit:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `authz-agent ARGS --socket <ours>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(agent_bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .env("AUTHZ_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run authz-agent")
    }

    /// `cli` that must succeed; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "authz-agent {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cli ... --json` parsed.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("JSON output")
    }

    /// Signs a permit for `binary` in `cgroup` with the root key.
    pub fn issue(&self, binary: &Path, cgroup: &str, ttl: &str, extra: &[&str]) -> PathBuf {
        self.issue_with(&self.root.key, binary, cgroup, ttl, extra)
    }

    /// Signs a permit for `binary` in `cgroup` with `team`'s key, under its
    /// delegation.
    pub fn issue_as(
        &self,
        team: &Team,
        binary: &Path,
        cgroup: &str,
        ttl: &str,
        extra: &[&str],
    ) -> PathBuf {
        let delegation = team.delegation.to_str().expect("UTF-8 path");
        let mut args = vec!["--delegation", delegation];
        args.extend_from_slice(extra);
        self.issue_with(&team.keys.key, binary, cgroup, ttl, &args)
    }

    /// Signs a permit for `binary` in `cgroup` with `key`, checked against
    /// this daemon's config.
    fn issue_with(
        &self,
        key: &Path,
        binary: &Path,
        cgroup: &str,
        ttl: &str,
        extra: &[&str],
    ) -> PathBuf {
        let out_path = self.dir.join(format!(
            "{}-{}.permit.toml",
            binary.file_name().and_then(|n| n.to_str()).unwrap_or("bin"),
            rand_suffix()
        ));
        let mut cmd = Command::new(agent_bin());
        cmd.args(["artifact", "issue", "--key"])
            .arg(key)
            .arg("--binary")
            .arg(binary)
            .args(["--cgroup", cgroup, "--ttl", ttl, "--requested-by", "test"])
            .arg("--config")
            .arg(&self.config)
            .args(extra)
            .arg("--out")
            .arg(&out_path);
        succeed(&mut cmd, "artifact issue");
        out_path
    }

    /// Generates a key `name` and delegates `cgroup_prefix` to it with the
    /// root key (`extra`: more `delegate` options, e.g. `--not-before`).
    pub fn delegate(
        &self,
        name: &str,
        cgroup_prefix: &str,
        max_ttl: &str,
        expires: &str,
        extra: &[&str],
    ) -> Team {
        let keys = generate_key(&self.dir, name);
        let delegation = self.dir.join(format!("{name}.delegation"));
        succeed(
            Command::new(agent_bin())
                .args(["delegate", "--key"])
                .arg(&self.root.key)
                .arg("--to")
                .arg(keys.key.with_extension("pub"))
                .args(["--cgroup-prefix", cgroup_prefix, "--max-ttl", max_ttl])
                .args(["--expires", expires])
                .arg("--config")
                .arg(&self.config)
                .args(extra)
                .arg("--out")
                .arg(&delegation),
            "delegate",
        );
        let d =
            authz_agent::vocab::delegation::Delegation::read(&delegation).expect("read delegation");
        Team {
            keys,
            link_id: d.last().grant().id.to_string(),
            delegation,
        }
    }

    /// `n` permits for `binary` in `cgroup`, signed in process with the root
    /// key (each with its own id), as TOML.
    pub fn issue_many(
        &self,
        binary: &Path,
        cgroup: &str,
        ttl_seconds: u64,
        n: usize,
    ) -> Vec<String> {
        let subject =
            authz_agent::artifact::issue::subject_for_binary(binary).expect("hash binary");
        self.issue_subjects(vec![subject; n], cgroup, ttl_seconds)
    }

    /// One permit per SHA-256 in `digests` (no file needs to have it) in
    /// `cgroup`, signed in process with the root key, as TOML.
    pub fn issue_for_digests(
        &self,
        digests: &[[u8; 32]],
        cgroup: &str,
        ttl_seconds: u64,
    ) -> Vec<String> {
        let subjects = digests
            .iter()
            .map(|d| authz_agent::artifact::Subject {
                sha256: *d,
                path: None,
                name: None,
                exec_memory: false,
            })
            .collect();
        self.issue_subjects(subjects, cgroup, ttl_seconds)
    }

    /// One permit per subject, signed on every core (thousands take a while
    /// under emulation), in order.
    fn issue_subjects(
        &self,
        subjects: Vec<authz_agent::artifact::Subject>,
        cgroup: &str,
        ttl_seconds: u64,
    ) -> Vec<String> {
        use authz_agent::{
            artifact::{issue, Provenance, Scope},
            vocab::time::Timestamp,
        };
        let key = authz_agent::trust::keys::read_secret_key(&self.root.key).expect("read key");
        let threads = std::thread::available_parallelism().map_or(2, |t| t.get());
        let chunk = subjects.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let workers: Vec<_> = subjects
                .chunks(chunk)
                .map(|part| {
                    let key = &key;
                    s.spawn(move || {
                        part.iter()
                            .map(|subject| {
                                let request = issue::Request {
                                    subject: subject.clone(),
                                    scope: Scope {
                                        cgroup: cgroup.parse().expect("cgroup path"),
                                        descendants: false,
                                    },
                                    not_before: Timestamp::now(),
                                    ttl_seconds,
                                    policy_version: 1,
                                    provenance: Provenance::default(),
                                    libraries: Vec::new(),
                                };
                                issue::issue(request, key, None, Timestamp::now())
                                    .expect("issue")
                                    .to_toml()
                            })
                            .collect::<Vec<String>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("signer"))
                .collect()
        })
    }

    /// Signs a revocation list of `ids` with `key` through the CLI
    /// (`extra`: e.g. `--delegation FILE`); returns its file.
    pub fn revocation_list(
        &self,
        key: &Path,
        serial: u32,
        ids: &[&str],
        extra: &[&str],
    ) -> PathBuf {
        let out = self.dir.join(format!("list-{serial}-{}.toml", ids.len()));
        let serial = serial.to_string();
        let mut cmd = Command::new(agent_bin());
        cmd.args(["revocations", "issue", "--key"])
            .arg(key)
            .args(["--serial", &serial, "--reason", "incident 17", "--config"])
            .arg(&self.config)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .args(ids)
            .env("AUTHZ_LOG", "warn");
        // Not `ok`: signing is offline and takes no --socket.
        succeed(&mut cmd, "revocations issue");
        out
    }

    /// The decision log.
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("log/decisions.jsonl")
    }

    /// Every record of the decision log, parsed.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.audit_log())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a log line is JSON"))
            .collect()
    }

    /// SIGTERM and wait: a clean stop (the daemon checkpoints its log).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// SIGKILL, no cleanup of any kind.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The id of the artifact in `file`.
    pub fn artifact_id(file: &Path) -> String {
        let a = authz_agent::artifact::Artifact::read(file).expect("read artifact");
        a.id.to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        let _ = authz_agent::enforcer::pin::unload(&self.pin_dir);
        let _ = fs::remove_dir(&self.pin_dir);
    }
}

fn rand_suffix() -> String {
    let mut b = [0u8; 4];
    // SAFETY: writes at most 4 bytes into `b`.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    hex::encode(b)
}
