# authz demo, run inside the VM by `cargo xtask demo`.
# The whole product: a signing key, a trust policy, the daemon enforcing one
# cgroup, a refused exec, a signed permit that allows it, revocation, and the
# kernel still enforcing after the daemon is killed. Any surprise exits non-zero.
set -u
step() { printf '\n==> %s\n' "$*"; }
fail() { echo "DEMO FAILED: $*"; [ -f /tmp/agent.log ] && tail -n 20 /tmp/agent.log; exit 1; }
# Runs a command inside the enforced cgroup /demo (this shell stays outside it).
in_demo() { sh -c 'echo $$ > /sys/fs/cgroup/demo/cgroup.procs && exec "$@"' sh "$@"; }
expect_refused() {
    if in_demo "$@" >/tmp/out 2>&1; then cat /tmp/out; fail "$* ran, but must be refused"; fi
    grep -q "Permission denied\|Operation not permitted" /tmp/out || { cat /tmp/out; fail "expected EPERM"; }
    echo "refused: $*  ($(tail -n 1 /tmp/out))"
}
expect_runs() {
    in_demo "$@" >/tmp/out 2>&1 || { cat /tmp/out; fail "$* was refused"; }
    echo "ran:     $*  -> $(cat /tmp/out)"
}
wait_ready() {
    for i in $(seq 1 150); do
        authz-agent status >/dev/null 2>&1 && return 0
        sleep 0.4
    done
    fail "agent not ready"
}

step "Can this kernel enforce? (BPF LSM active, program loads, self-test refuses a probe exec)"
authz-agent check || fail "authz-agent check"

step "An ops root key, and a trust policy that lets it sign permits for /demo"
mkdir -p /etc/authz /opt/job /sys/fs/cgroup/demo
authz-agent key generate --out /etc/authz/ops-root >/dev/null || fail "key generate"
pub=$(sed -n 's/^public_key = "\(.*\)"/\1/p' /etc/authz/ops-root.pub)
cat > /etc/authz/agent.toml <<EOF
[agent]
mode = "enforce"
enforce_cgroups = ["/demo"]

[trust]
version = 1

[[trust.roots]]
name = "ops-root"
public_key = "$pub"
cgroup_prefixes = ["/demo"]
max_ttl = "7d"
EOF
cat /etc/authz/agent.toml

step "Start the daemon: enforce mode, only in the cgroup /demo"
authz-agent run --config /etc/authz/agent.toml >/tmp/agent.log 2>&1 &
agent=$!
wait_ready
authz-agent status | head -n 4

cp /bin/busybox /opt/job/busybox && chmod 755 /opt/job/busybox
step "/opt/job/busybox has no permit: the kernel refuses it in /demo"
expect_refused /opt/job/busybox echo hello

step "Sign a permit for exactly this binary's SHA-256 in /demo, valid 1 hour, and submit it"
authz-agent artifact issue --key /etc/authz/ops-root.key --binary /opt/job/busybox \
    --cgroup /demo --ttl 1h --requested-by alice --reason "demo job" \
    --config /etc/authz/agent.toml --out /tmp/job.permit >/dev/null || fail "issue"
authz-agent artifact inspect /tmp/job.permit
authz-agent submit /tmp/job.permit || fail "submit"
expect_runs /opt/job/busybox echo hello

step "Same path, different content: a permit binds content, not a path"
cp /opt/job/busybox /opt/job/other && printf 'x' >> /opt/job/other && chmod 755 /opt/job/other
expect_refused /opt/job/other echo tampered

step "kill -9 the daemon: the kernel keeps deciding (fail closed, permits still honoured)"
kill -9 "$agent"; wait "$agent" 2>/dev/null
expect_refused /opt/job/other echo still-refused
expect_runs /opt/job/busybox echo still-allowed

step "Restart: the pinned state is re-adopted without a gap"
authz-agent run --config /etc/authz/agent.toml >>/tmp/agent.log 2>&1 &
agent=$!
wait_ready
authz-agent list

step "Revoke the permit: refused again at once, and it can never be re-submitted"
id=$(authz-agent list --json | sed -n 's/.*"id": "\([0-9a-f]*\)".*/\1/p' | head -n 1)
authz-agent revoke "$id" --reason "demo over" || fail "revoke"
expect_refused /opt/job/busybox echo hello
if authz-agent submit /tmp/job.permit; then fail "a revoked permit was accepted again"; fi

step "What the kernel refused (authz-agent report)"
authz-agent report

kill "$agent"; wait "$agent" 2>/dev/null

step "The decision log is tamper-evident: hash-chained, checkpoints signed by the agent's key"
authz-agent audit verify || fail "audit verify"
seq=$(grep '"allow"' /var/log/authz/decisions.jsonl | grep '"kind":"exec"' | grep '"/opt/job/busybox"' | tail -n 1 | sed 's/^{"seq":\([0-9]*\),.*/\1/')
step "Explain one decision (record $seq): who, what, under whose authority, why"
authz-agent audit explain "$seq" || fail "audit explain"
cp /var/log/authz/decisions.jsonl /tmp/forged.jsonl
sed -i 's/"decision":"deny"/"decision":"allow"/' /tmp/forged.jsonl
step "Rewrite every denial in a copy of the log as an allow: verify names the first forged record"
if authz-agent audit verify /tmp/forged.jsonl; then fail "a forged log verified"; fi

authz-agent unload
step "Demo complete"
