# authz demo, run inside the VM by `cargo xtask demo`.
# Shows: the host check, a refused exec in an enforced cgroup, and the kernel's
# decision record. Each step prints what it proves; any surprise exits non-zero.
set -u
step() { printf '\n==> %s\n' "$*"; }
fail() { echo "DEMO FAILED: $*"; exit 1; }

step "Can this kernel enforce? (BPF LSM active, program loads, self-test refuses a probe exec)"
authz-agent check || fail "authz-agent check"

step "Start the agent in enforce mode, limited to the cgroup /demo"
mkdir -p /sys/fs/cgroup/demo
mkdir -p /opt/job && cp /bin/busybox /opt/job/busybox && chmod 755 /opt/job/busybox
authz-agent run --mode enforce --enforce-cgroup /demo >/tmp/decisions.jsonl 2>/tmp/agent.log &
agent=$!
for i in $(seq 1 120); do
    grep -q "authz-agent enforcing" /tmp/agent.log && break
    kill -0 "$agent" 2>/dev/null || { cat /tmp/agent.log; fail "agent exited"; }
    sleep 0.5
done
grep -q "authz-agent enforcing" /tmp/agent.log || { cat /tmp/agent.log; fail "agent not ready"; }
echo "agent running (pid $agent); this shell is outside /demo, so it is not enforced"

step "Run /opt/job/busybox (sha256 $(sha256sum /opt/job/busybox | cut -c1-16)...) inside /demo: no permit, so the kernel refuses it"
if sh -c 'echo $$ > /sys/fs/cgroup/demo/cgroup.procs && exec /opt/job/busybox echo "this must not print"' 2>/tmp/err; then
    fail "the unauthorized exec ran"
fi
cat /tmp/err
grep -q "Permission denied\|Operation not permitted" /tmp/err || fail "expected EPERM"

step "The same binary outside /demo runs (scope is limited to /demo)"
/opt/job/busybox echo "ran outside the enforced subtree" || fail "exec outside scope"

step "The kernel's decision record (from the ring buffer)"
sleep 1
grep '"filename":"/opt/job/busybox"' /tmp/decisions.jsonl | head -n 1
grep -q '"decision":"deny".*"reason":"no-permit"\|"reason":"no-permit".*"decision":"deny"' /tmp/decisions.jsonl \
    || grep -q '"no-permit"' /tmp/decisions.jsonl || fail "no deny record"

kill "$agent"; wait "$agent" 2>/dev/null
step "Demo complete: authz refused an unauthorized exec in the kernel"
