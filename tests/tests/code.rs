//! Code execution beyond execve (issue 14): files mapped executable need a
//! permit for their digest like an exec does, memory no file backs may not
//! become executable unless the process's own permit grants it, and nobody
//! writes into process memory from outside. Each test is named after the
//! attack. The C programs are built from tests/c by `cargo xtask test` and
//! live in /authz/c in the VM.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use authz_agent::enforcer::{Decision, Enforcer, LoadOptions, Mode, PermitUse, Reason};
use authz_tests::*;

const C: &str = "/authz/c";
const EVIL_MARKER: &str = "/tmp/authz-evil-ran";

fn c(name: &str) -> PathBuf {
    Path::new(C).join(name)
}

/// An enforcer for `<name>/jail` with `libraries` and `exec_memory` set.
fn code_jail(
    name: &str,
    libraries: Mode,
    exec_memory: Mode,
) -> (Enforcer, TestCgroups, PathBuf, u64) {
    let mut cgroups = TestCgroups::new(name);
    let (dir, id) = cgroups.create("jail");
    let enforcer = enforcer_with(LoadOptions {
        mode: Mode::Enforce,
        enforced_paths: vec![cgroups.path("jail")],
        libraries,
        exec_memory,
        ..LoadOptions::default()
    });
    (enforcer, cgroups, dir, id)
}

fn grant(enforcer: &mut Enforcer, use_: PermitUse, file: &Path, cgroup_id: u64) {
    let (k, p) = permit(sha256_file(file), cgroup_id, 0x14, EXACT);
    enforcer.grant(use_, k, p).expect("grant");
}

/// Exec permit for `program`, mapping permits for everything it loads.
fn permit_with_libraries(enforcer: &mut Enforcer, program: &Path, cgroup_id: u64) {
    grant(enforcer, PermitUse::Exec, program, cgroup_id);
    let closure = authz_agent::elf::closure(program).expect("closure");
    assert!(
        closure.interpreter.is_some(),
        "{program:?} is dynamically linked"
    );
    for lib in closure.files() {
        grant(enforcer, PermitUse::Map, lib, cgroup_id);
    }
}

/// Runs `program args` in `jail` with `env`; (exit code, stdout, stderr), or
/// the exec error.
fn run(
    jail: &Path,
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::io::Result<(i32, String, String)> {
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().envs(env.iter().copied());
    let out = in_cgroup_as(&mut cmd, jail, None)?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn ld_preload_of_an_unpermitted_library_never_runs_its_constructor() {
    let (mut enforcer, _cg, jail, jail_id) = code_jail("preload", Mode::Off, Mode::Off);
    let dynprog = c("dynprog");
    permit_with_libraries(&mut enforcer, &dynprog, jail_id);
    let preload = [("LD_PRELOAD", "/authz/c/evil.so")];

    // Without library checks the attack works: the constructor runs inside
    // the permitted program.
    let _ = fs::remove_file(EVIL_MARKER);
    let (code, _, _) = run(&jail, &dynprog, &[], &preload).expect("dynprog runs");
    assert_eq!(code, 0);
    assert!(
        Path::new(EVIL_MARKER).exists(),
        "the attack itself must work when libraries are off"
    );

    // Enforced: the preload is never mapped executable, its constructor
    // never runs, and the program itself still runs.
    fs::remove_file(EVIL_MARKER).unwrap();
    enforcer
        .set_code_checks(Mode::Enforce, Mode::Off)
        .expect("libraries = enforce");
    let (code, _, stderr) = run(&jail, &dynprog, &[], &preload).expect("dynprog runs");
    assert!(
        !Path::new(EVIL_MARKER).exists(),
        "the preloaded library's constructor ran: {stderr}"
    );
    assert_eq!(
        code, 0,
        "the permitted program runs (glibc skips a preload it cannot map): {stderr}"
    );
    let ev = enforcer
        .wait_event(EVENT_TIMEOUT, |ev| ev.path.ends_with("evil.so"))
        .expect("a refusal for evil.so");
    assert_eq!(
        (ev.decision, ev.reason, ev.hook),
        (Decision::Deny, Reason::LibraryNoPermit, "mmap")
    );
    assert_eq!(ev.cgroup_id, jail_id);
}

#[test]
fn dlopen_of_an_unpermitted_library_fails_and_a_permitted_one_works() {
    let (mut enforcer, _cg, jail, jail_id) = code_jail("dlopen", Mode::Enforce, Mode::Off);
    let dl = c("dl");
    permit_with_libraries(&mut enforcer, &dl, jail_id);
    let (code, _, stderr) = run(&jail, &dl, &["/authz/c/evil.so"], &[]).expect("dl runs");
    assert_eq!(
        code, 3,
        "dlopen of an unpermitted library must fail: {stderr}"
    );
    assert!(!Path::new(EVIL_MARKER).exists() || fs::remove_file(EVIL_MARKER).is_ok());
    grant(&mut enforcer, PermitUse::Map, &c("evil.so"), jail_id);
    let _ = fs::remove_file(EVIL_MARKER);
    let (code, _, stderr) = run(&jail, &dl, &["/authz/c/evil.so"], &[]).expect("dl runs");
    assert_eq!(code, 0, "a permitted library loads: {stderr}");
    let _ = fs::remove_file(EVIL_MARKER);
}

#[test]
fn ld_so_running_an_unpermitted_payload_is_refused() {
    let (mut enforcer, _cg, jail, jail_id) = code_jail("ldso", Mode::Enforce, Mode::Off);
    let payload = c("payload");
    let interp = authz_agent::elf::interpreter(&payload)
        .expect("elf")
        .expect("dynamically linked");
    // The loader as a library of permitted programs: mapping only.
    permit_with_libraries(&mut enforcer, &c("dynprog"), jail_id);
    let mut cmd = Command::new(&interp);
    cmd.arg(&payload).env_clear();
    assert_eperm(&in_cgroup_as(&mut cmd, &jail, None));
    // Even with an exec permit for the loader (a mistake), the payload it
    // would map is refused: it never runs.
    grant(&mut enforcer, PermitUse::Exec, &interp, jail_id);
    let (code, stdout, stderr) =
        run(&jail, &interp, &[payload.to_str().unwrap()], &[]).expect("the loader runs");
    assert!(!stdout.contains("payload ran"), "{stdout}");
    assert_ne!(code, 0, "{stderr}");
    let ev = enforcer
        .wait_event(EVENT_TIMEOUT, |ev| {
            ev.path.ends_with("/payload") && ev.hook == "mmap"
        })
        .expect("a mapping refusal for the payload");
    assert_eq!(ev.reason, Reason::LibraryNoPermit);
}

#[test]
fn mmap_and_mprotect_exec_of_an_unpermitted_file_are_refused() {
    let (mut enforcer, _cg, jail, jail_id) = code_jail("mapfile", Mode::Enforce, Mode::Off);
    let mapfile = c("mapfile");
    permit_with_libraries(&mut enforcer, &mapfile, jail_id);
    let scratch = Scratch::new("mapfile");
    let target = scratch.file("blob", &vec![0x90u8; 8192]);
    let t = target.path.to_str().unwrap();
    let (code, _, e) = run(&jail, &mapfile, &["mmap", t], &[]).unwrap();
    assert_eq!(code, 3, "mmap(PROT_EXEC) of an unpermitted file: {e}");
    let (code, _, e) = run(&jail, &mapfile, &["mprotect", t], &[]).unwrap();
    assert_eq!(
        code, 4,
        "mprotect adding PROT_EXEC to an unpermitted file: {e}"
    );
    // Permitted: both work (mprotect decides from the digest the mmap check cached).
    grant(&mut enforcer, PermitUse::Map, &target.path, jail_id);
    let (code, _, e) = run(&jail, &mapfile, &["mmap", t], &[]).unwrap();
    assert_eq!(code, 0, "{e}");
    let (code, _, e) = run(&jail, &mapfile, &["mprotect", t], &[]).unwrap();
    assert_eq!(code, 0, "{e}");
}

#[test]
fn a_dynamically_linked_program_with_its_library_permits_runs() {
    let (mut enforcer, _cg, jail, jail_id) = code_jail("dynprog", Mode::Enforce, Mode::Enforce);
    let dynprog = c("dynprog");
    let closure = authz_agent::elf::closure(&dynprog).expect("closure");
    assert!(
        closure.libraries.len() >= 11,
        "ten libraries and libc: {closure:?}"
    );
    permit_with_libraries(&mut enforcer, &dynprog, jail_id);
    let (code, _, e) = run(&jail, &dynprog, &[], &[]).expect("runs");
    assert_eq!(code, 0, "{e}");
    // One library short: refused at its mapping, the program does not start.
    let (k, _) = permit(sha256_file(&closure.libraries[3]), jail_id, 0, EXACT);
    enforcer.revoke(PermitUse::Map, &k).unwrap();
    let (code, _, _) = run(&jail, &dynprog, &[], &[]).expect("the loader reports");
    assert_ne!(code, 0);
}

#[test]
fn anonymous_executable_memory_is_refused_unless_the_permit_grants_a_jit() {
    let (mut enforcer, _cg, jail, jail_id) = code_jail("jit", Mode::Enforce, Mode::Enforce);
    let jit = c("jit");
    permit_with_libraries(&mut enforcer, &jit, jail_id);
    let (code, _, e) = run(&jail, &jit, &["mmap"], &[]).unwrap();
    assert_eq!(code, 3, "anonymous PROT_EXEC under deny: {e}");
    let (code, _, e) = run(&jail, &jit, &["mprotect"], &[]).unwrap();
    assert_eq!(
        code, 4,
        "mprotect adding PROT_EXEC to written memory under deny: {e}"
    );
    let ev = enforcer
        .wait_event(EVENT_TIMEOUT, |ev| ev.reason == Reason::ExecMemory)
        .expect("an exec-memory refusal");
    assert_eq!(ev.decision, Decision::Deny);
    // Its own permit grants executable memory: both work.
    grant(&mut enforcer, PermitUse::ExecMemory, &jit, jail_id);
    for how in ["mmap", "mprotect"] {
        let (code, _, e) = run(&jail, &jit, &[how], &[]).unwrap();
        assert_eq!(code, 0, "{how} with a JIT grant: {e}");
    }
}

#[test]
fn writes_into_another_processs_memory_are_refused_under_deny() {
    let (mut enforcer, _cg, jail, jail_id) = code_jail("pokemem", Mode::Enforce, Mode::Enforce);
    let pokemem = c("pokemem");
    permit_with_libraries(&mut enforcer, &pokemem, jail_id);
    let mut victim = Command::new("/bin/busybox")
        .args(["sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .expect("victim");
    let pid = victim.id().to_string();
    let (code, _, e) = run(&jail, &pokemem, &[&pid], &[]).unwrap();
    let _ = victim.kill();
    let _ = victim.wait();
    assert_eq!(code, 3, "/proc/PID/mem opened for writing: {e}");
    let ev = enforcer
        .wait_event(EVENT_TIMEOUT, |ev| ev.reason == Reason::CodeWrite)
        .expect("a code-write refusal");
    assert_eq!(ev.cgroup_id, jail_id);
}

#[test]
fn audit_mode_reports_each_without_refusing() {
    let (mut enforcer, _cg, jail, jail_id) = code_jail("codeaudit", Mode::Audit, Mode::Audit);
    let dynprog = c("dynprog");
    permit_with_libraries(&mut enforcer, &dynprog, jail_id);
    let jit = c("jit");
    permit_with_libraries(&mut enforcer, &jit, jail_id);
    let _ = fs::remove_file(EVIL_MARKER);
    let (code, _, _) = run(&jail, &dynprog, &[], &[("LD_PRELOAD", "/authz/c/evil.so")]).unwrap();
    assert_eq!(code, 0);
    assert!(Path::new(EVIL_MARKER).exists(), "audit refuses nothing");
    let _ = fs::remove_file(EVIL_MARKER);
    let (code, _, e) = run(&jail, &jit, &["mmap"], &[]).unwrap();
    assert_eq!(code, 0, "{e}");
    let lib = enforcer
        .wait_event(EVENT_TIMEOUT, |ev| ev.path.ends_with("evil.so"))
        .expect("the library is reported");
    assert_eq!(
        (lib.decision, lib.reason),
        (Decision::AuditDeny, Reason::LibraryNoPermit)
    );
    let mem = enforcer
        .wait_event(EVENT_TIMEOUT, |ev| ev.reason == Reason::ExecMemory)
        .expect("the executable memory is reported");
    assert_eq!(mem.decision, Decision::AuditDeny);
}

/// The whole path, as an operator takes it: permits issued with
/// `artifact issue`, submitted to a running agent, reach the kernel's maps.
/// Under `libraries = "enforce"` a dynamically linked program needs its
/// loader and libraries permitted (`--with-libraries`); under
/// `exec_memory = "deny"` its JIT needs `--exec-memory` in its own permit.
#[test]
fn a_dynamic_program_runs_on_permits_issued_with_libraries_and_its_jit_on_exec_memory() {
    let d = daemon::Daemon::start_with(
        "codeagent",
        "enforce",
        "libraries = \"enforce\"\nexec_memory = \"deny\"",
    );
    let jit = c("jit");
    let submit = |extra: &[&str]| {
        let p = d.issue(&jit, &d.cgroup, "1h", extra);
        let out = d.ok(&["submit", p.to_str().unwrap()]);
        assert!(out.contains("accepted") && out.contains("live"), "{out}");
    };
    // Its own exec permit only: the loader or libc cannot be mapped, so the
    // program never reaches main (exit 3 would mean it did).
    submit(&[]);
    let r = run(&d.cgroup_dir, &jit, &["mmap"], &[]);
    assert!(
        !matches!(r, Ok((0 | 3, _, _))),
        "ran without library permits: {r:?}"
    );
    // With its libraries: it runs, and its JIT is refused.
    submit(&["--with-libraries"]);
    let (code, _, e) = run(&d.cgroup_dir, &jit, &["mmap"], &[]).expect("runs");
    assert_eq!(code, 3, "anonymous PROT_EXEC under deny: {e}");
    // A permit that grants executable memory: the JIT runs, both ways.
    submit(&["--with-libraries", "--exec-memory"]);
    for how in ["mmap", "mprotect"] {
        let (code, _, e) = run(&d.cgroup_dir, &jit, &[how], &[]).expect("runs");
        assert_eq!(code, 0, "{how} with an exec-memory permit: {e}");
    }
    // `list` says what each permit grants beyond its exec.
    let list = d.json(&["list"]);
    let entries = list["permits"].as_array().expect("permits");
    assert_eq!(entries.len(), 3, "{list}");
    let with_libraries = entries
        .iter()
        .filter(|e| e["libraries"].as_array().is_some_and(|l| !l.is_empty()))
        .count();
    assert_eq!(with_libraries, 2, "{list}");
    let jit_grants = entries.iter().filter(|e| e["exec_memory"] == true).count();
    assert_eq!(jit_grants, 1, "{list}");
}
