#!/usr/bin/env bash
# Checks deploy/systemd/inferd.service without systemd as PID 1: `systemd-analyze verify` and
# `security` on the unit, then inferd run from an install tree laid out as the README says,
# under the parts of the unit's sandbox a process can apply to itself (mount namespace,
# dynamic uid, no capabilities, NoNewPrivileges, seccomp: MemoryDenyWriteExecute,
# RestrictAddressFamilies, RestrictNamespaces, SystemCallFilter), with a stand-in for systemd's
# notify socket, traced with strace for any system call the sandbox refused.
# Usage: deploy/systemd/check.sh   (INFERD_BIN=path to test another binary, KEEP=1 keeps the temp folder)
set -uo pipefail
cd "$(dirname "$0")/../.."
unit=deploy/systemd/inferd.service
max_exposure=2.0

passed=0 failed=0
ok() { echo "ok - $1"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $1: $2"; failed=$((failed + 1)); }
finish() {
  echo "systemd: $passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit
}

# --- tools ---
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v strace >/dev/null || need+=(strace)
command -v curl >/dev/null || need+=(curl)
command -v setpriv >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
ls /usr/lib/*-linux-gnu*/libseccomp.so.2 /lib/*-linux-gnu*/libseccomp.so.2 >/dev/null 2>&1 || need+=(libseccomp2)
if [ "${#need[@]}" -gt 0 ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for tool in systemd-analyze strace curl python3; do
  command -v "$tool" >/dev/null || { not_ok "tools" "$tool is missing; install Debian's ${need[*]}"; finish; }
done
strace -qq -o /dev/null true 2>/dev/null || { not_ok "tools" "strace cannot trace here (is ptrace refused, as in some containers?)"; finish; }

bin=${INFERD_BIN:-target/debug/inferd}
if [ ! -x "$bin" ]; then
  cargo build --locked >/dev/null 2>&1 || { not_ok "build" "cargo build --locked failed"; finish; }
fi
ort=.ort/libonnxruntime.so.1.31.1
[ -f "$ort" ] || ./scripts/fetch-onnxruntime.sh >/dev/null
[ -f "$ort" ] || { not_ok "ONNX Runtime" "$ort is missing (scripts/fetch-onnxruntime.sh)"; finish; }

T=$(mktemp -d)
chmod 755 "$T" # the service's dynamic user must reach the install tree
pids=()
children_of() { # from /proc, skipping processes that end meanwhile
  local stat line
  for stat in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$stat" || continue
    set -- ${line##*) } # state, ppid, ...
    [ "$2" = "$parent" ] && echo "${stat//[^0-9]/}"
  done
}
cleanup() {
  # strace's child first: a killed strace lets its tracee run on.
  for pid in "${pids[@]}"; do
    for child in $(parent=$pid children_of); do kill -KILL "$child" 2>/dev/null; done
    kill -KILL "$pid" 2>/dev/null
  done
  wait 2>/dev/null
  [ -n "${KEEP:-}" ] && echo "# kept $T" || rm -rf "$T"
}
trap cleanup EXIT

# --- the unit as committed ---
out=$(systemd-analyze verify "$unit" 2>&1)
rest=$(grep -v 'Command /opt/inferd/bin/inferd is not executable' <<<"$out")
if [ -z "$rest" ]; then
  ok "systemd-analyze verify $unit: nothing to report but the binary not installed here"
else
  not_ok "systemd-analyze verify $unit" "$(tr '\n' ' ' <<<"$rest")"
fi

out=$(systemd-analyze security --offline=true "$unit" 2>&1)
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
if [ -z "$score" ]; then
  not_ok "systemd-analyze security" "no exposure level in its output: $(tail -2 <<<"$out" | tr '\n' ' ')"
elif python3 -c "import sys; sys.exit(not float('$score') <= $max_exposure)"; then
  ok "systemd-analyze security --offline=true: exposure $score (at most $max_exposure)"
else
  not_ok "systemd-analyze security" "exposure $score is above $max_exposure: $(grep '✗' <<<"$out" | awk '{print $2}' | tr '\n' ' ')"
fi

# Settings the deployment relies on (the README explains each).
missing=()
for want in Type=notify NotifyAccess=main Restart=on-failure 'ExecReload=/bin/kill -HUP $MAINPID' \
  KillSignal=SIGTERM DynamicUser=yes ProtectSystem=strict NoNewPrivileges=yes PrivateTmp=yes \
  CapabilityBoundingSet= SystemCallFilter=@system-service MemoryDenyWriteExecute=yes \
  Environment=INFERD_HOST=127.0.0.1 Environment=PORT=8080 LogsDirectory=inferd \
  Environment=INFERD_PREDICTION_LOG_DIR=/var/log/inferd \
  Environment=ORT_DYLIB_PATH=/opt/inferd/lib/libonnxruntime.so.1.31.1; do
  grep -qxF -- "$want" "$unit" || missing+=("$want")
done
if [ "${#missing[@]}" = 0 ]; then ok "unit sets the settings the README relies on"; else not_ok "unit settings" "missing: ${missing[*]}"; fi

grace=$(sed -n 's/^shutdown_grace_seconds *= *\([0-9]*\).*/\1/p' runtime.toml)
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$unit")
if [ -n "$stop" ] && [ -n "$grace" ] && [ "$stop" -gt "$grace" ]; then
  ok "TimeoutStopSec=$stop is above shutdown_grace_seconds=$grace"
else
  not_ok "TimeoutStopSec" "'$stop' is not above runtime.toml's shutdown_grace_seconds '$grace'"
fi

# --- an install tree as the README lays it out, under $T instead of / ---
opt=$T/opt/inferd etc=$T/etc/inferd logs=$T/var/log/inferd
mkdir -p "$opt/bin" "$opt/lib" "$opt/models" "$opt/schemas" "$etc" "$logs"
cp "$bin" "$opt/bin/inferd"
cp "$ort" "$opt/lib/"
cp models/*.onnx "$opt/models/"
cp schemas/*.json "$opt/schemas/"
# The README's command, /opt/inferd moved under $T.
sed -e "s#^path = \"#path = \"$opt/#" -e "s#^schema = \"#schema = \"$opt/#" runtime.toml >"$etc/runtime.toml"
chmod -R a+rX "$T"
dyn_uid=61875 # what the sandbox below runs as, from systemd's DynamicUser range
if [ "$(id -u)" = 0 ]; then chown "$dyn_uid:$dyn_uid" "$logs"; else dyn_uid=$(id -u); fi
chmod 750 "$logs"
sed -e "s#/opt/inferd#$opt#g" -e "s#/etc/inferd#$etc#g" -e "s#/var/log/inferd#$logs#g" \
  -e 's#^Environment=PORT=8080$#Environment=PORT=0#' "$unit" >"$T/inferd.service"

out=$(systemd-analyze verify "$T/inferd.service" 2>&1)
if [ -z "$out" ]; then ok "systemd-analyze verify: clean with ExecStart at a real binary"; else not_ok "systemd-analyze verify (real binary)" "$(tr '\n' ' ' <<<"$out")"; fi

# --- helpers: systemd's notify socket, and the sandbox ---
cat >"$T/notify.py" <<'EOF'
# Stands in for systemd's notify socket: one line per state sent, "pid=N STATE", the pid
# being the sender's as the kernel reports it (NotifyAccess=main accepts the main pid only).
import os, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)  # as /run/systemd/notify: the service runs as another user
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
while True:
    data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12))
    pid = "?"
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", payload[:12])[0]
    for line in data.decode(errors="replace").splitlines():
        print(f"pid={pid} {line}", flush=True)
EOF
cat >"$T/sandbox.py" <<'EOF'
"""Runs a unit's ExecStart under the parts of its [Service] sandbox that do not need systemd.

Usage: sandbox.py UNIT NOTIFY_SOCKET TREE LOGS_DIR (TREE: the folder holding the install tree).
As systemd 252 would: a mount namespace (ProtectSystem=strict with the logs folder writable,
ProtectHome, PrivateTmp, ProtectProc, ProcSubset), LimitNOFILE, an empty capability bounding
set, a dynamic uid, NoNewPrivileges, UMask, and seccomp filters for MemoryDenyWriteExecute,
RestrictAddressFamilies, RestrictNamespaces and SystemCallFilter (+ SystemCallErrorNumber,
native architecture only); then execs ExecStart with the unit's Environment= only. Not
covered: PrivateDevices, PrivateUsers, PrivateIPC, IPAddressDeny, ProtectKernel*, ProtectClock,
ProtectHostname. The mount namespace and the uid need root; without it they are left out."""
import ctypes, ctypes.util, errno, os, resource, shlex, socket, subprocess, sys

DYNAMIC_UID = 61875
unit_path, notify_socket, tree, logs_dir = sys.argv[1:5]

service, section = {}, None
for raw in open(unit_path):
    line = raw.strip()
    if not line or line[0] in "#;":
        continue
    if line.startswith("["):
        section = line
    elif section == "[Service]" and "=" in line:
        key, value = line.split("=", 1)
        service.setdefault(key.strip(), []).append(value.strip())


def setting(key, default=None):
    return service.get(key, [default])[-1]


def yes(key):
    return (setting(key) or "no").lower() in ("yes", "true", "1", "on")


# Read now: ProtectHome may hide this interpreter's own files, ProcSubset /proc/sys.
syscall_groups = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True).stdout
cap_last = int(open("/proc/sys/kernel/cap_last_cap").read())
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]


def check(rc, what):
    if rc != 0:
        sys.exit(f"sandbox: {what}: {os.strerror(ctypes.get_errno())}")


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18


def mount(src, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    check(libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


root = os.geteuid() == 0
if root:
    check(libc.unshare(0x00020000), "unshare(CLONE_NEWNS)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount(logs_dir, logs_dir, None, MS_BIND)  # its own mount, left writable below
    if setting("ProtectSystem") == "strict":
        for line in open("/proc/self/mountinfo").readlines():
            point = line.split()[4].replace("\\040", " ")
            if point == logs_dir or any(point == p or point.startswith(p + "/") for p in ("/proc", "/sys", "/dev")):
                continue
            try:
                keep = os.statvfs(point).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
            except OSError:
                continue  # hidden under another mount
            libc.mount(None, point.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | keep, None)
    # PrivateTmp hides the host's /tmp, where the install tree lives: bind it back in.
    handle = os.open(tree, os.O_PATH)
    if yes("PrivateTmp"):
        for tmp in ("/tmp", "/var/tmp"):
            mount("tmpfs", tmp, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
        os.makedirs(tree, exist_ok=True)
        mount(f"/proc/self/fd/{handle}", tree, None, MS_BIND | MS_REC)
    os.close(handle)
    if setting("ProtectHome") == "yes":
        for home in ("/home", "/root", "/run/user"):
            if os.path.isdir(home) and not tree.startswith(home + "/"):
                mount("tmpfs", home, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "mode=0755")
    opts = []
    if setting("ProtectProc") in ("invisible", "noaccess", "ptraceable"):
        opts.append("hidepid=" + setting("ProtectProc"))
    if setting("ProcSubset") == "pid":
        opts.append("subset=pid")
    if opts:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, ",".join(opts))

nofile = setting("LimitNOFILE")
if nofile:
    soft, _, hard = nofile.partition(":")
    want = (int(soft), int(hard or soft))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, want)
    except (ValueError, OSError):
        # Without CAP_SYS_RESOURCE (systemd has it) the hard limit cannot be raised.
        cap = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want[0], cap), min(want[1], cap)))
        print(f"sandbox: LimitNOFILE={nofile} capped at this machine's hard limit {cap}", file=sys.stderr, flush=True)

PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
if root:
    if setting("CapabilityBoundingSet") == "":
        for cap in range(cap_last + 1):
            check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
    if yes("DynamicUser"):
        os.setgroups([])
        os.setresgid(DYNAMIC_UID, DYNAMIC_UID, DYNAMIC_UID)
        os.setresuid(DYNAMIC_UID, DYNAMIC_UID, DYNAMIC_UID)
if yes("NoNewPrivileges"):
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
os.umask(int(setting("UMask", "0022"), 8))

seccomp = ctypes.CDLL("libseccomp.so.2")
seccomp.seccomp_init.restype = ctypes.c_void_p
seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


seccomp.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)]
seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
ALLOW, KILL_PROCESS = 0x7FFF0000, 0x80000000
CMP_EQ, CMP_GT, CMP_MASKED_EQ = 4, 6, 7
ERRNO = lambda n: 0x00050000 | n


def rule(ctx, action, name, *cmps):
    n = seccomp.seccomp_syscall_resolve_name(name.encode())
    if n < 0:
        return  # not a system call of this architecture
    arr = (ArgCmp * max(1, len(cmps)))(*[ArgCmp(*c) for c in cmps])
    rc = seccomp.seccomp_rule_add_array(ctx, action, n, len(cmps), arr)
    if rc < 0:
        sys.exit(f"sandbox: seccomp rule for {name}: {os.strerror(-rc)}")


def load(ctx, what):
    rc = seccomp.seccomp_load(ctx)
    if rc < 0:
        sys.exit(f"sandbox: loading the {what} filter: {os.strerror(-rc)}")


# Filters stack and the strictest answer wins; the allow list goes last, since seccomp()
# itself is not in @system-service.
if yes("MemoryDenyWriteExecute"):
    # Newer systemd asks the kernel (PR_SET_MDWE, Linux 6.3+); 252 adds the seccomp rules
    # below. Both, when the kernel has the first.
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    mdwe = "prctl and seccomp" if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0 else "seccomp"
    print(f"sandbox: MemoryDenyWriteExecute by {mdwe}", file=sys.stderr, flush=True)
    ctx = seccomp.seccomp_init(ALLOW)
    W, X, SHM_EXEC = 2, 4, 0o100000
    rule(ctx, ERRNO(errno.EPERM), "mmap", (2, CMP_MASKED_EQ, W | X, W | X))
    rule(ctx, ERRNO(errno.EPERM), "mprotect", (2, CMP_MASKED_EQ, X, X))
    rule(ctx, ERRNO(errno.EPERM), "pkey_mprotect", (2, CMP_MASKED_EQ, X, X))
    rule(ctx, ERRNO(errno.EPERM), "shmat", (2, CMP_MASKED_EQ, SHM_EXEC, SHM_EXEC))
    load(ctx, "MemoryDenyWriteExecute")
families = setting("RestrictAddressFamilies")
if families:
    allowed = {int(getattr(socket, name)) for name in families.split()}
    ctx = seccomp.seccomp_init(ALLOW)
    for family in range(max(allowed)):
        if family not in allowed:
            rule(ctx, ERRNO(errno.EAFNOSUPPORT), "socket", (0, CMP_EQ, family, 0))
    rule(ctx, ERRNO(errno.EAFNOSUPPORT), "socket", (0, CMP_GT, max(allowed), 0))
    load(ctx, "RestrictAddressFamilies")
if yes("RestrictNamespaces"):
    ctx = seccomp.seccomp_init(ALLOW)
    for flag in (0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000, 0x80):
        rule(ctx, ERRNO(errno.EPERM), "clone", (0, CMP_MASKED_EQ, flag, flag))
        rule(ctx, ERRNO(errno.EPERM), "unshare", (0, CMP_MASKED_EQ, flag, flag))
    rule(ctx, ERRNO(errno.EPERM), "setns")
    # clone3's flags are in a struct seccomp cannot read: systemd answers ENOSYS, and glibc
    # falls back to clone().
    rule(ctx, ERRNO(errno.ENOSYS), "clone3")
    load(ctx, "RestrictNamespaces")
filters = service.get("SystemCallFilter", [])
if filters:
    groups, current = {}, None
    for line in syscall_groups.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.split()[0], [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.split()[0])

    def expand(item, seen=()):
        if not item.startswith("@"):
            return {item}
        if item not in groups:
            sys.exit(f"sandbox: unknown system call group {item}")
        return set().union(*(expand(m, seen + (item,)) for m in groups[item] if m not in seen))

    allow = None
    for value in filters:
        names = set().union(*(expand(x) for x in value.lstrip("~").split()))
        if allow is None:
            if value.startswith("~"):
                sys.exit("sandbox: a deny-list-only SystemCallFilter is not handled here")
            allow = set()
        allow = allow - names if value.startswith("~") else allow | names
    allow |= {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}  # always let through
    err = setting("SystemCallErrorNumber")
    ctx = seccomp.seccomp_init(ERRNO(getattr(errno, err)) if err else KILL_PROCESS)
    for name in sorted(allow):
        rule(ctx, ALLOW, name)
    load(ctx, "SystemCallFilter")

env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "NOTIFY_SOCKET": notify_socket}
if yes("DynamicUser"):
    # What systemd sets for a dynamic user, whose home is /.
    env.update(HOME="/", USER="inferd", LOGNAME="inferd", SHELL="/usr/sbin/nologin")
for value in service.get("Environment", []):
    for pair in shlex.split(value):
        key, _, val = pair.partition("=")
        env[key] = val
argv = shlex.split(setting("ExecStart"))
print(f"sandbox: mount namespace {'yes' if root else 'no (not root)'}, uid {os.getuid()}", file=sys.stderr, flush=True)
os.execve(argv[0], argv, env)
EOF

# --- run it ---
python3 "$T/notify.py" "$T/notify.sock" >"$T/notify.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$T/notify.sock" ] && break; sleep 0.1; done
strace -f -qq -o "$T/strace.log" python3 "$T/sandbox.py" "$T/inferd.service" "$T/notify.sock" "$T" "$logs" >"$T/out.log" 2>&1 &
tracer=$!
pids+=("$tracer")

main_pid="" addr="" after_ready=0
for _ in $(seq 600); do # up to 60 s: models load before READY=1
  main_pid=$(sed -n 's/^pid=\([0-9]*\) READY=1$/\1/p' "$T/notify.log" | head -1)
  [ -n "$main_pid" ] && break
  kill -0 "$tracer" 2>/dev/null || break
  # Logged "ready" but no READY=1 within 5 s: a binary without sd_notify.
  grep -q '"message":"ready"' "$T/out.log" && after_ready=$((after_ready + 1))
  [ "$after_ready" -gt 50 ] && break
  sleep 0.1
done
addr=$(grep -o '"message":"listening","addr":"[^"]*"' "$T/out.log" | head -1 | sed 's/.*"addr":"\([^"]*\)"/\1/')
if [ -z "$main_pid" ]; then
  not_ok "READY=1 on the notify socket" "none; service log: $(tail -3 "$T/out.log" | tr '\n' ' ')"
  finish
fi
exe=$(readlink "/proc/$main_pid/exe" 2>/dev/null)
ready=$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/ready")
if [ "$exe" = "$opt/bin/inferd" ] && [ "$ready" = 200 ]; then
  ok "READY=1 sent by the main process (pid $main_pid, $exe), and /ready was 200 by then"
else
  not_ok "READY=1" "sender pid $main_pid is '$exe', /ready $ready"
fi

status=/proc/$main_pid/status
uid=$(awk '/^Uid:/ {print $2}' "$status")
capbnd=$(awk '/^CapBnd:/ {print $2}' "$status")
nnp=$(awk '/^NoNewPrivs:/ {print $2}' "$status")
filters=$(awk '/^Seccomp_filters:/ {print $2}' "$status")
if [ "$uid" = "$dyn_uid" ] && [ "$nnp" = 1 ] && [ "${filters:-0}" -ge 4 ] && { [ "$(id -u)" != 0 ] || [ "$capbnd" = 0000000000000000 ]; }; then
  ok "sandbox applied: uid $uid, capability bounding set $capbnd, NoNewPrivs, $filters seccomp filters"
else
  not_ok "sandbox" "uid $uid (want $dyn_uid), CapBnd $capbnd, NoNewPrivs $nnp, seccomp filters $filters"
fi
[ "$(id -u)" = 0 ] || echo "# not root: the mount namespace and the dynamic uid were left out"

want_nofile=$(sed -n 's/^LimitNOFILE=//p' "$unit")
cap_line=$(grep -o 'capped at this machine.s hard limit [0-9]*' "$T/out.log" | grep -o '[0-9]*$')
[ -n "$cap_line" ] && want_nofile=$cap_line
limits=$(awk '/^Max open files/ {print $4 ":" $5}' "/proc/$main_pid/limits")
if [ "$limits" = "$want_nofile:$want_nofile" ]; then
  ok "open files limit $limits (LimitNOFILE${cap_line:+, capped at the hard limit of this machine})"
else
  not_ok "open files limit" "$limits, want $want_nofile:$want_nofile"
fi

rid=systemd-check-$$
body=$(curl -s -w '\n%{http_code}' -H 'content-type: application/json' -H "x-request-id: $rid" --data @example.json "http://$addr/predict")
if [ "$(tail -1 <<<"$body")" = 200 ] && grep -q '"predictions"' <<<"$body"; then
  ok "POST /predict 200 under MemoryDenyWriteExecute ($(sed -n 's/^sandbox: MemoryDenyWriteExecute by //p' "$T/out.log")) and SystemCallFilter"
else
  not_ok "POST /predict" "$(tr '\n' ' ' <<<"$body")"
fi

# The README's health check, with the port this run got.
if probe_out=$("$opt/bin/inferd" probe --ready --config "$etc/runtime.toml" --port "${addr##*:}" 2>&1); then
  ok "inferd probe --ready --config .../runtime.toml: exit 0 ($probe_out)"
else
  not_ok "inferd probe --ready" "$probe_out"
fi

reload=$(sed -n 's/^ExecReload=//p' "$unit")
MAINPID=$main_pid eval "$reload"
# SIGHUP reloads the configuration; the outcome is logged once the reload is done. Nothing
# changed, so it is "unchanged".
outcome=""
for _ in $(seq 300); do # up to 30 s
  outcome=$(grep '"trigger":"sighup"' "$T/out.log" | grep -o '"message":"re[^"]*"' | head -1)
  [ -n "$outcome" ] && break
  kill -0 "$main_pid" 2>/dev/null || break
  sleep 0.1
done
health=$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/health")
if kill -0 "$main_pid" 2>/dev/null && [ "$health" = 200 ] && [ "$outcome" = '"message":"reload: the models are unchanged"' ]; then
  ok "systemctl reload's command (SIGHUP) reloads the configuration (unchanged) and the service keeps serving"
else
  not_ok "reload" "alive: $(kill -0 "$main_pid" 2>/dev/null && echo yes || echo no), /health $health, outcome: ${outcome:-none logged}"
fi

start=$(date +%s%N)
kill -TERM "$main_pid"
for _ in $(seq $((stop * 10))); do kill -0 "$tracer" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$main_pid" 2>/dev/null # past TimeoutStopSec, as systemd would
wait "$tracer"
rc=$?
ms=$((($(date +%s%N) - start) / 1000000))
stopping=$(grep -c "^pid=$main_pid STOPPING=1$" "$T/notify.log")
if [ "$rc" = 0 ] && [ "$stopping" = 1 ] && [ "$ms" -lt $((grace * 1000)) ]; then
  ok "SIGTERM: STOPPING=1 from the main process, exit 0 after $ms ms (grace ${grace} s)"
else
  not_ok "SIGTERM" "exit $rc after $ms ms, STOPPING=1 lines from pid $main_pid: $stopping"
fi

files=$(find "$logs" -type f -name 'predictions*.jsonl')
if [ -n "$files" ] && grep -q "\"request_id\":\"$rid\"" $files; then
  ok "prediction log written to the LogsDirectory (INFERD_PREDICTION_LOG_DIR): $(basename "$files")"
else
  not_ok "prediction log" "no line with request id $rid under $logs"
fi

# Warnings inferd or ONNX Runtime logged under the sandbox (the SYN filter's, when this kernel
# refuses it to everyone, is dealt with below; "authentication is off" is the config's, not the
# sandbox's: this unit runs the bundled config, which configures no credentials).
warnings=$(grep -E '"level":"(WARN|ERROR)"' "$T/out.log" | grep -v -e 'cannot stop new handshakes' -e 'authentication is off' |
  sed -n 's/.*"message":"\([^"]*\)".*/\1/p' | sort | uniq -c)
if [ -z "$warnings" ]; then ok "service log: no warnings under the sandbox"; else not_ok "service log warnings" "$(tr '\n' ';' <<<"$warnings")"; fi

# System calls refused from the exec of inferd on. clone3 gets ENOSYS on purpose (systemd's
# RestrictNamespaces), and glibc falls back to clone.
# strace -f splits a call that another thread interrupts into "<unfinished ...>" and
# "<... name resumed>" lines; they are joined again, so that a refused call is read whole.
awk -v exe="$opt/bin/inferd" 'index($0, "execve(\"" exe "\"") && / = 0$/ {on = 1} on' "$T/strace.log" |
  awk '/ <unfinished \.\.\.>$/ { line = $0; sub(/ <unfinished \.\.\.>$/, "", line); pending[$1] = line; next }
       /^[0-9]+ +<\.\.\. [a-z0-9_]+ resumed>/ { rest = $0; sub(/^[0-9]+ +<\.\.\. [a-z0-9_]+ resumed>/, "", rest)
                                              print pending[$1] rest; delete pending[$1]; next }
       { print }' >"$T/inferd.strace"
refused=$(grep -E '= -1 (EPERM|EACCES|EROFS|EAFNOSUPPORT|ENOSYS)' "$T/inferd.strace" | grep -v 'clone3' |
  sed -E 's/^[0-9]+ +([a-z0-9_]+)\((.{0,70}).* = -1 ([A-Z]+) .*/\1(\2...) \3/')
# This kernel may ask CAP_NET_ADMIN for SO_ATTACH_FILTER on TCP sockets (Linux commit
# 5d39580f68e6): then any unprivileged process is refused, sandbox or not.
if grep -q 'SO_ATTACH_FILTER' <<<"$refused"; then
  # Debian's own python3: one under a home folder may be out of the other uid's reach.
  as_user=()
  [ "$(id -u)" = 0 ] && as_user=(setpriv --reuid="$dyn_uid" --regid="$dyn_uid" --clear-groups)
  probe=$("${as_user[@]}" /usr/bin/python3 -c '
import ctypes, socket, struct
ins = ctypes.create_string_buffer(struct.pack("HBBI", 6, 0, 0, 0xFFFFFFFF))
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
try:
    s.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", 1, ctypes.addressof(ins))); print("allowed")  # SO_ATTACH_FILTER
except OSError as e:
    print(e.strerror)' 2>&1)
  if [ "$probe" = "Operation not permitted" ]; then
    echo "# this kernel refuses SO_ATTACH_FILTER on TCP sockets to any process without CAP_NET_ADMIN ($probe), sandbox or not:"
    echo "# inferd logs 'cannot stop new handshakes before draining' at SIGTERM and drains without the SYN filter"
    refused=$(grep -v 'SO_ATTACH_FILTER' <<<"$refused")
  fi
fi
# ONNX Runtime creates its cache folder under $HOME (/ for a dynamic user), read-only here.
home_cache=$(grep -E '^(mkdir|openat|chmod)\((AT_FDCWD, )?"/\.cache' <<<"$refused")
[ -n "$home_cache" ] && echo "# ONNX Runtime tried to write under \$HOME=/ (read-only): $(head -1 <<<"$home_cache")"
refused=$(grep -vE '^(mkdir|openat|chmod)\((AT_FDCWD, )?"/\.cache' <<<"$refused")
if [ -z "$refused" ]; then
  ok "strace: no system call refused by the sandbox, no write outside the LogsDirectory"
else
  not_ok "strace: refused system calls" "$(sort <<<"$refused" | uniq -c | head -10 | tr '\n' ';')"
fi

outside=$(grep -E '^[0-9]+ +(connect|sendto|sendmsg)\(.*sa_family=AF_INET' "$T/inferd.strace" |
  grep -vE 'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"' | head -3)
if [ -z "$outside" ]; then
  ok "strace: no connection beyond loopback (ONNX Runtime telemetry off)"
else
  not_ok "strace: connections beyond loopback" "$(tr '\n' ';' <<<"$outside")"
fi

finish
