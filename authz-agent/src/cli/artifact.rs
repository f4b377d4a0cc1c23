//! `authz-agent artifact issue | verify | inspect`.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::SystemTime,
};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::{
    exit::{self, Exit},
    output::Output,
    sign::{check, check_and_write, parse_start, HostArgs, PolicySource},
};
use crate::{
    artifact::{
        issue::{self, Request},
        Artifact, Digest, Library, Provenance, Scope, MAX_LIBRARIES,
    },
    defaults,
    trust::{
        keys,
        verify::{effective_window, Window},
        verify_on, HostCheck, HostIdentity, TrustPolicy,
    },
    vocab::{
        delegation::Delegation,
        fields::{join_prefixes, ArtifactId, CgroupPath},
        keyid::KeyId,
        text::{ArtifactError, FileError},
        time::{format_duration, parse_duration, Timestamp},
    },
};

/// Issue, verify and inspect permits (authorization artifacts).
///
/// A permit lets one binary (by SHA-256) run in one cgroup (optionally with its
/// descendants) for a limited time. It is a signed TOML file.
#[derive(Debug, Args)]
pub struct ArtifactArgs {
    #[command(subcommand)]
    pub command: ArtifactCommand,
}

#[derive(Debug, Subcommand)]
// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum ArtifactCommand {
    // Boxed: its many options make it far larger than the others.
    Issue(Box<IssueArgs>),
    Verify(VerifyArgs),
    Inspect(InspectArgs),
}

/// Sign a permit for a binary
///
/// Hashes the binary (streaming) and signs a permit for it to run in --cgroup
/// for --ttl from now. A root key signs on its own; a team key passes the
/// delegation that gives it authority. With --config, the permit is verified
/// against the agent's trust policy before it is written.
///
/// Where the agent checks libraries (`libraries = "audit"` or "enforce"), a
/// dynamically linked program also needs permits for what it maps
/// executable: --with-libraries adds its loader and shared libraries, as
/// that loader resolves them now, to the same permit (same cgroup, same
/// window); --library adds a file it loads at run time (dlopen).
/// --exec-memory lets the program's processes make memory executable (a
/// JIT) where `exec_memory = "deny"`; a delegated key may sign that only if
/// its delegation allows it (`delegate --exec-memory`).
///
/// Example: authz-agent artifact issue --key team-a.key
///   --delegation team-a.delegation --binary /usr/bin/make
///   --cgroup /jobs.slice/team-a/build --descendants --ttl 12h
///   --reason "nightly build" --requested-by alice --config agent.toml
///   --out make.permit
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct IssueArgs {
    /// The signing key (NAME.key).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// The delegation giving the signing key its authority (not needed for a
    /// root key).
    #[arg(long, value_name = "FILE")]
    pub delegation: Option<PathBuf>,
    /// The binary to allow; its SHA-256 is what the kernel checks.
    #[arg(long, value_name = "PATH")]
    pub binary: PathBuf,
    /// The cgroup v2 path the binary may run in, e.g. /jobs.slice/build.
    #[arg(long, value_name = "CGROUP")]
    pub cgroup: String,
    /// Also allow it in every descendant cgroup of --cgroup.
    #[arg(long)]
    pub descendants: bool,
    /// Also allow the binary's loader and shared libraries to be mapped
    /// executable (its closure, as its own loader resolves it now). A static
    /// binary has none: nothing is added.
    #[arg(long)]
    pub with_libraries: bool,
    /// Also allow this file to be mapped executable (a library the program
    /// dlopens, a plugin); repeatable.
    #[arg(long = "library", value_name = "FILE")]
    pub libraries: Vec<PathBuf>,
    /// Let the binary's processes make memory executable (a JIT: node, java)
    /// where the agent denies executable memory.
    #[arg(long)]
    pub exec_memory: bool,
    /// How long the permit lasts (e.g. 30m, 12h, 7d).
    #[arg(long, value_name = "DURATION")]
    pub ttl: String,
    /// When the permit starts (RFC 3339 UTC; default now).
    #[arg(long, value_name = "TIME")]
    pub not_before: Option<String>,
    /// Why the permit is needed (free text, recorded and signed).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The human, service or AI agent asking for the permit.
    #[arg(long, value_name = "ID")]
    pub requested_by: Option<String>,
    /// Who delegated the authority to ask.
    #[arg(long, value_name = "ID")]
    pub on_behalf_of: Option<String>,
    #[command(flatten)]
    pub hosts: HostArgs,
    #[command(flatten)]
    pub policy: PolicySource,
    /// Where to write the permit (`-` for standard output). Never overwrites.
    /// Optional with --submit.
    #[arg(long, value_name = "FILE", required_unless_present = "submit")]
    pub out: Option<PathBuf>,
    /// Also submit the permit to the running agent (as `authz-agent submit`).
    #[arg(long)]
    pub submit: bool,
    /// The agent's control socket, for --submit.
    #[arg(long, env = "AUTHZ_SOCKET", default_value = defaults::SOCKET, requires = "submit")]
    pub socket: PathBuf,
    /// Print what was issued (and the agent's answer) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Check a permit; exit 0 only when it is valid
///
/// Verifies every signature, the chain of delegations, the cgroup scope and
/// lifetime limits, the time window, the policy version and revocations
/// against the `[trust]` table of the agent's config, and a host binding
/// against this host (its /etc/machine-id and the config's `host_labels`).
/// When the permit is not valid, prints the reason on one line and exits 3
/// (`refused`).
///
/// Example: authz-agent artifact verify make.permit --config /etc/authz/agent.toml
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct VerifyArgs {
    /// The permit file.
    pub file: PathBuf,
    /// The agent config whose `[trust]` table decides.
    #[arg(long, value_name = "FILE", env = "AUTHZ_CONFIG", default_value = defaults::CONFIG)]
    pub config: PathBuf,
    /// Verify as of this time (RFC 3339 UTC) instead of now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Treat this permit or delegation id as revoked; repeatable.
    #[arg(long, value_name = "ID")]
    pub revoked: Vec<ArtifactId>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Show what a permit (or delegation) allows, for whom, until when
///
/// Reads the file and prints its content in plain words. Checks only that it is
/// well-formed: use `artifact verify` to check signatures and trust.
///
/// Example: authz-agent artifact inspect make.permit
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct InspectArgs {
    /// A permit or delegation file.
    pub file: PathBuf,
    /// Print the content as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ArtifactArgs {
    /// The agent config this command reads, if any.
    pub(super) fn config(&self) -> Option<&Path> {
        match &self.command {
            ArtifactCommand::Issue(a) => a.policy.config.as_deref(),
            ArtifactCommand::Verify(a) => Some(&a.config),
            ArtifactCommand::Inspect(_) => None,
        }
    }

    pub(super) fn json(&self) -> bool {
        match &self.command {
            ArtifactCommand::Issue(a) => a.json,
            ArtifactCommand::Verify(a) => a.json,
            ArtifactCommand::Inspect(a) => a.json,
        }
    }
}

/// A permit as `--json` shows it.
#[derive(Debug, serde::Serialize)]
pub struct PermitJson {
    pub id: String,
    /// SHA-256 of the binary (hex).
    pub digest: String,
    pub cgroup: String,
    pub descendants: bool,
    /// The permit's own window (RFC 3339).
    pub not_before: String,
    pub expires: String,
    /// Where its window and every delegation link's overlap (absent: never).
    pub in_force: Option<crate::control::protocol::Window>,
    /// The key that signed (the root key when there is no chain).
    pub signer: String,
    /// Delegation link ids, root first.
    pub chain: Vec<String>,
    pub policy_version: u32,
    pub issued_at: String,
    pub requested_by: Option<String>,
    pub on_behalf_of: Option<String>,
    pub reason: Option<String>,
    pub subject_path: Option<String>,
    pub subject_name: Option<String>,
}

impl PermitJson {
    pub fn of(a: &Artifact) -> Self {
        let w = effective_window(a);
        Self {
            id: a.id.to_string(),
            digest: hex::encode(a.subject.sha256),
            cgroup: a.scope.cgroup.to_string(),
            descendants: a.scope.descendants,
            not_before: a.validity.not_before.to_string(),
            expires: a.validity.expires.to_string(),
            in_force: (!w.is_empty()).then(|| crate::control::protocol::Window {
                not_before: w.not_before.to_string(),
                expires: w.expires.to_string(),
            }),
            signer: a.issuer.to_string(),
            chain: a.chain.iter().map(|l| l.grant().id.to_string()).collect(),
            policy_version: a.policy_version,
            issued_at: a.issued_at.to_string(),
            requested_by: a.provenance.requested_by.clone(),
            on_behalf_of: a.provenance.on_behalf_of.clone(),
            reason: a.provenance.reason.clone(),
            subject_path: a.subject.path.clone(),
            subject_name: a.subject.name.clone(),
        }
    }
}

/// `artifact issue --json`.
#[derive(Debug, serde::Serialize)]
struct IssueResult {
    permit: PermitJson,
    /// Where it was written (absent with --submit alone).
    out: Option<PathBuf>,
    /// The agent's answer, with --submit.
    submitted: Option<crate::control::protocol::SubmitResult>,
}

/// `artifact verify --json` (an invalid permit is an error instead).
#[derive(Debug, serde::Serialize)]
struct VerifyResult {
    valid: bool,
    permit: PermitJson,
    /// The trusted root its authority comes from.
    root: String,
}

/// `artifact inspect --json` of a delegation.
#[derive(Debug, serde::Serialize)]
struct DelegationJson {
    kind: &'static str,
    delegate_key: String,
    cgroup_prefixes: Vec<String>,
    max_ttl_seconds: u64,
    not_before: String,
    expires: String,
    /// Link ids, root first.
    links: Vec<String>,
    root_key: String,
}

/// Runs `authz-agent artifact ...`.
pub fn run(args: ArtifactArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ArtifactCommand::Issue(a) => issue(*a),
        ArtifactCommand::Verify(a) => verify(&a),
        ArtifactCommand::Inspect(a) => inspect(&a),
    }
}

fn issue(args: IssueArgs) -> anyhow::Result<ExitCode> {
    let (policy, policy_version) = args.policy.load()?;
    let key = keys::read_secret_key(&args.key)?;
    let delegation = args
        .delegation
        .as_deref()
        .map(Delegation::read)
        .transpose()?;
    let now = Timestamp::now();
    let not_before = parse_start(args.not_before.as_deref(), now)?;
    let scope = Scope {
        cgroup: CgroupPath::normalize(&args.cgroup)?,
        descendants: args.descendants,
    };
    let ttl_seconds = parse_duration(&args.ttl)?;
    let mut subject = issue::subject_for_binary(&args.binary)
        .with_context(|| format!("cannot hash {}", args.binary.display()))?;
    subject.exec_memory = args.exec_memory;
    let libraries = requested_libraries(&args, &subject.sha256)?;
    let request = Request {
        subject,
        scope,
        not_before,
        ttl_seconds,
        policy_version,
        provenance: Provenance {
            requested_by: args.requested_by,
            on_behalf_of: args.on_behalf_of,
            reason: args.reason,
        },
        libraries,
    };
    let artifact = issue::issue_bound(
        request,
        args.hosts.binding()?,
        &key,
        delegation.as_ref(),
        now,
    )?;
    if args.json && args.out.as_deref() == Some(Path::new("-")) {
        return Err(exit::error(
            Exit::Usage,
            "--json and --out - would both print on standard output: write the permit to a file",
        ));
    }
    match &args.out {
        Some(out) => check_and_write(&artifact, policy.as_ref(), out)?,
        None => check(&artifact, policy.as_ref())?,
    }
    let window = effective_window(&artifact);
    eprintln!(
        "issued permit {} for {} in {}, in force from {} until {}{}",
        artifact.id,
        hex::encode(artifact.subject.sha256),
        scope_text(&artifact),
        window.not_before,
        window.expires,
        narrowed_note(&artifact, window)
    );
    if !artifact.libraries.is_empty() {
        eprintln!(
            "  with {} librar{} it may map executable there",
            artifact.libraries.len(),
            if artifact.libraries.len() == 1 {
                "y"
            } else {
                "ies"
            }
        );
    }
    if artifact.subject.exec_memory {
        eprintln!("  its processes may make memory executable (a JIT)");
    }
    let submitted = if args.submit {
        let v =
            super::control::submit_text(&args.socket, artifact.to_toml()).with_context(|| {
                format!(
                    "permit {} was issued{} but not accepted by the agent",
                    artifact.id,
                    args.out
                        .as_deref()
                        .map_or_else(String::new, |o| format!(" ({})", o.display()))
                )
            })?;
        eprintln!(
            "submitted: {} in {}{}",
            v.state.as_str(),
            v.cgroup.as_deref().unwrap_or("-"),
            if v.already_accepted {
                " (already accepted)"
            } else {
                ""
            }
        );
        Some(v)
    } else {
        None
    };
    if args.json {
        let result = IssueResult {
            permit: PermitJson::of(&artifact),
            out: args.out.clone(),
            submitted,
        };
        Output::Json.print(&result, |_| String::new())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The libraries `--with-libraries` and `--library` ask for: the closure
/// first, then the named files; each file once, the binary itself never.
fn requested_libraries(args: &IssueArgs, own: &Digest) -> anyhow::Result<Vec<Library>> {
    let mut out = Vec::new();
    if args.with_libraries {
        out = issue::libraries_for_binary(&args.binary, own)?;
        if out.is_empty() {
            eprintln!(
                "{} is statically linked: it maps no loader or shared library, nothing to add",
                args.binary.display()
            );
        }
    }
    for file in &args.libraries {
        let lib = issue::library_for_file(file)?;
        if lib.sha256 != *own && !out.iter().any(|l: &Library| l.sha256 == lib.sha256) {
            out.push(lib);
        }
    }
    if out.len() > MAX_LIBRARIES {
        anyhow::bail!(
            "{} libraries asked for; a permit lists at most {MAX_LIBRARIES}: split them over two permits",
            out.len()
        );
    }
    Ok(out)
}

fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let policy = TrustPolicy::from_config_file(&args.config)?;
    let artifact = Artifact::read(&args.file)?;
    let now = match &args.at {
        Some(t) => t.parse::<Timestamp>()?.to_system_time(),
        None => SystemTime::now(),
    };
    // The agent's own revocation list counts too, when this user can read it.
    let mut revoked_ids: std::collections::HashSet<ArtifactId> =
        args.revoked.iter().copied().collect();
    let config = crate::config::Config::load(&args.config).ok();
    let host = HostIdentity::local(config.as_ref().map_or(&[], |c| &c.agent.host_labels));
    if let Some(config) = &config {
        match crate::store::Store::at(&config.agent.state_dir).revocations() {
            Ok(list) => revoked_ids.extend(list.into_keys()),
            Err(e) => eprintln!(
                "warning: the agent's revocation list was not checked ({}); pass --revoked ID to check ids by hand",
                crate::error_chain(&e)
            ),
        }
    }
    let revoked = |id: &ArtifactId| revoked_ids.contains(id);
    let verified = verify_on(&artifact, &policy, HostCheck::This(&host), &revoked, now)
        .with_context(|| format!("{} is not valid", args.file.display()))?;
    let root = policy
        .root(&verified.issuer)
        .map_or_else(|| verified.issuer.to_string(), ToString::to_string);
    if args.json {
        let result = VerifyResult {
            valid: true,
            permit: PermitJson::of(&artifact),
            root,
        };
        Output::Json.print(&result, |_| String::new())?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("valid: permit {}", verified.id);
    print!("{}", summary(&artifact, Timestamp::from_system_time(now)));
    println!("trusted via root key {root}");
    Ok(ExitCode::SUCCESS)
}

fn inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let now = Timestamp::now();
    match Artifact::read(&args.file) {
        Ok(artifact) if args.json => {
            Output::Json.print(&PermitJson::of(&artifact), |_| String::new())?;
        }
        Err(FileError::Invalid {
            source: ArtifactError::WrongFormat { .. },
            ..
        }) if args.json => {
            let d = Delegation::read(&args.file)?;
            let g = d.last().grant();
            let result = DelegationJson {
                kind: "delegation",
                delegate_key: d.last().delegate_key_id().to_string(),
                cgroup_prefixes: g
                    .cgroup_prefixes
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect(),
                max_ttl_seconds: g.max_ttl_seconds,
                not_before: g.not_before.to_string(),
                expires: g.expires.to_string(),
                links: d.links().iter().map(|l| l.grant().id.to_string()).collect(),
                root_key: d.links()[0].grant().issuer.to_string(),
            };
            Output::Json.print(&result, |_| String::new())?;
        }
        Ok(artifact) => {
            println!("permit {}", artifact.id);
            print!("{}", summary(&artifact, now));
            println!("signature: not checked here; `authz-agent artifact verify` checks it");
        }
        Err(FileError::Invalid {
            source: ArtifactError::WrongFormat { .. },
            ..
        }) => {
            let delegation = Delegation::read(&args.file)?;
            print!("{}", delegation_summary(&delegation, now));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}

fn scope_text(a: &Artifact) -> String {
    if a.scope.descendants {
        format!("cgroup {} and its descendants", a.scope.cgroup)
    } else {
        format!("cgroup {} only (not its descendants)", a.scope.cgroup)
    }
}

/// `in 3h 2m`, `2h ago`.
fn relative(t: Timestamp, now: Timestamp) -> String {
    match (t.seconds_since(now), now.seconds_since(t)) {
        (Some(0), _) => "now".into(),
        (Some(ahead), _) => format!("in {}", format_duration(ahead)),
        (None, Some(ago)) => format!("{} ago", format_duration(ago)),
        (None, None) => String::new(),
    }
}

/// Who signed with what authority: `root key X` or `key Y, delegated by ...`.
fn signer_text(issuer: &KeyId, chain_len: usize) -> String {
    match chain_len {
        0 => format!("key {issuer} (must be a trusted root key)"),
        n => format!(
            "key {issuer}, through {n} delegation link{}",
            if n == 1 { "" } else { "s" }
        ),
    }
}

/// Says when a permit's effective window is narrower than its own.
fn narrowed_note(a: &Artifact, window: Window) -> String {
    if window.not_before == a.validity.not_before && window.expires == a.validity.expires {
        String::new()
    } else {
        format!(
            " (its own window, from {} until {}, narrowed by its delegation chain)",
            a.validity.not_before, a.validity.expires
        )
    }
}

/// What a permit allows, for whom, until when.
fn summary(a: &Artifact, now: Timestamp) -> String {
    let mut s = String::new();
    let hints: Vec<&str> = [a.subject.name.as_deref(), a.subject.path.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let _ = writeln!(
        s,
        "allows:    the binary with SHA-256 {}",
        hex::encode(a.subject.sha256)
    );
    if !hints.is_empty() {
        let _ = writeln!(s, "           (issued for {})", hints.join(", "));
    }
    if a.subject.exec_memory {
        let _ = writeln!(
            s,
            "           and its processes to make memory executable (a JIT)"
        );
    }
    if !a.libraries.is_empty() {
        let _ = writeln!(
            s,
            "maps:      {} file(s) executable, not exec'd:",
            a.libraries.len()
        );
        for l in &a.libraries {
            let _ = writeln!(
                s,
                "  {}  {}",
                hex::encode(l.sha256),
                l.path.as_deref().unwrap_or("(no path recorded)")
            );
        }
    }
    let _ = writeln!(s, "to run in: {}", scope_text(a));
    if let Some(hosts) = &a.hosts {
        let _ = writeln!(s, "on hosts:  {hosts} (any of them)");
    }
    let _ = writeln!(
        s,
        "from:      {} ({})",
        a.validity.not_before,
        relative(a.validity.not_before, now)
    );
    let _ = writeln!(
        s,
        "until:     {} ({}; lifetime {})",
        a.validity.expires,
        relative(a.validity.expires, now),
        format_duration(a.lifetime_seconds())
    );
    if !a.chain.is_empty() {
        let w = effective_window(a);
        if w.is_empty() {
            let _ = writeln!(
                s,
                "in force:  never (its window does not overlap its delegation chain's)"
            );
        } else {
            let _ = writeln!(
                s,
                "in force:  {} until {} (where its window and every delegation link's overlap)",
                w.not_before, w.expires
            );
        }
    }
    let _ = writeln!(s, "signed by: {}", signer_text(&a.issuer, a.chain.len()));
    for (i, link) in a.chain.iter().enumerate() {
        let g = link.grant();
        let _ = writeln!(
            s,
            "  link {}: key {} -> key {}: cgroups {}, permits up to {}, until {}{}",
            i + 1,
            g.issuer.short(),
            link.delegate_key_id().short(),
            join_prefixes(&g.cgroup_prefixes),
            format_duration(g.max_ttl_seconds),
            g.expires,
            if g.exec_memory {
                ", may grant executable memory"
            } else {
                ""
            }
        );
        if let Some(hosts) = &g.hosts {
            let _ = writeln!(s, "          only on hosts: {hosts}");
        }
    }
    let p = &a.provenance;
    let _ = writeln!(
        s,
        "asked by:  {}{}",
        p.requested_by.as_deref().unwrap_or("(not recorded)"),
        p.on_behalf_of
            .as_deref()
            .map_or(String::new(), |o| format!(", on behalf of {o}"))
    );
    if let Some(reason) = &p.reason {
        let _ = writeln!(s, "reason:    {reason}");
    }
    let _ = writeln!(
        s,
        "issued:    {} under trust policy version {}",
        a.issued_at, a.policy_version
    );
    s
}

fn delegation_summary(d: &Delegation, now: Timestamp) -> String {
    let mut s = String::new();
    let last = d.last();
    let g = last.grant();
    let _ = writeln!(s, "delegation to key {}", last.delegate_key_id());
    let _ = writeln!(
        s,
        "allows:    issuing permits for cgroups {}",
        join_prefixes(&g.cgroup_prefixes)
    );
    let _ = writeln!(
        s,
        "           each valid at most {}",
        format_duration(g.max_ttl_seconds)
    );
    let _ = writeln!(
        s,
        "           {} executable memory (a JIT)",
        if g.exec_memory {
            "that may grant"
        } else {
            "that may not grant"
        }
    );
    let _ = writeln!(
        s,
        "from:      {} ({})",
        g.not_before,
        relative(g.not_before, now)
    );
    let _ = writeln!(s, "until:     {} ({})", g.expires, relative(g.expires, now));
    for link in d.links() {
        if let Some(hosts) = &link.grant().hosts {
            let _ = writeln!(s, "on hosts:  {hosts} (link {})", link.grant().id);
        }
    }
    let root = d.links()[0].grant().issuer;
    let _ = writeln!(s, "root key:  {root} (must be a trusted root key)");
    for (i, link) in d.links().iter().enumerate() {
        let g = link.grant();
        let _ = writeln!(
            s,
            "  link {} ({}): key {} -> key {}, policy version {}",
            i + 1,
            g.id,
            g.issuer.short(),
            link.delegate_key_id().short(),
            g.policy_version
        );
    }
    let _ = writeln!(
        s,
        "signatures: not checked here; `authz-agent artifact verify` checks a permit's chain"
    );
    s
}
