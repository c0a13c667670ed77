"""A private containerd for tests: own root, state, socket and CNI dirs.

Nothing of the machine's own containerd setup is touched. ``ctr run --cni``
always looks for plugins in /opt/cni/bin and configs in /etc/cni/net.d (it
builds its CNI client with the library defaults), so each ``ctr`` that needs
CNI runs in a private mount namespace where those two paths are bind mounts
of the test's install dirs (made to exist with an overlay when the machine
has no such directories). The host's /opt and /etc are never changed.

This VM lacks CAP_SYS_RESOURCE: the CRI config sets
``restrict_oom_score_adj = true`` (else CRI sandboxes fail with "can't get
final child's PID from pipe").
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
CTR = shutil.which("ctr") or "/usr/bin/ctr"
# ctr names the CNI attachment "<namespace>-<id>"; the host veth is named from
# a hash of it (cni.names), so any namespace works.
NAMESPACE = "pct"
STATE_ROOT = "/run/containerd"  # containerd 1.6 puts shim sockets in <this>/s, whatever the config
CNI_BIN = "/opt/cni/bin"
CNI_CONF = "/etc/cni/net.d"


def _config(base: str, cni_bin_dir: str, cni_conf_dir: str) -> str:
    return f"""version = 2
root = "{base}/root"
state = "{base}/state"
oom_score = 0

[grpc]
  address = "{base}/containerd.sock"

[ttrpc]
  address = "{base}/containerd.sock.ttrpc"

[debug]
  address = "{base}/debug.sock"
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{cni_conf_dir}"
    max_conf_num = 1
"""


def _cni_mounts_script(base: str, cni_bin_dir: str, cni_conf_dir: str) -> str:
    """Shell that makes /opt/cni/bin and /etc/cni/net.d show the test's dirs
    (inside an already private mount namespace)."""
    lines = ["set -e"]
    for i, (target, source) in enumerate(((CNI_BIN, cni_bin_dir), (CNI_CONF, cni_conf_dir))):
        top = "/" + target.split("/")[1]  # /opt, /etc
        upper, work = f"{base}/ovl{i}/upper", f"{base}/ovl{i}/work"
        lines.append(
            f"if [ ! -d {target} ]; then mkdir -p {upper} {work}; "
            f"mount -t overlay overlay -o lowerdir={top},upperdir={upper},workdir={work} {top}; "
            f"mkdir -p {target}; fi"
        )
        lines.append(f"mount --bind {shlex.quote(source)} {target}")
    return "\n".join(lines)


class PrivateContainerd:
    def __init__(self, cni_bin_dir: str, cni_conf_dir: str, base: str | None = None,
                 netns: str | None = None) -> None:
        self.base = base or tempfile.mkdtemp(prefix="pycalico-ctrd-")
        # Run containerd (so its host-network containers) and ``ctr run --cni``
        # (so the CNI plugins) inside this named netns: the "node". nsenter,
        # not ``ip netns exec``: that remounts /sys without the cgroup mounts runc needs.
        self.netns_prefix = ["nsenter", f"--net=/var/run/netns/{netns}"] if netns else []
        self.cni_bin_dir = cni_bin_dir
        self.cni_conf_dir = cni_conf_dir
        self.address = f"{self.base}/containerd.sock"
        self.config_path = f"{self.base}/config.toml"
        self.log_path = f"{self.base}/containerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._created_state_root = False
        self.foreground: dict[str, subprocess.Popen[str]] = {}

    # -- daemon ------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> "PrivateContainerd":
        self._created_state_root = not os.path.exists(STATE_ROOT)
        with open(self.config_path, "w") as f:
            f.write(_config(self.base, self.cni_bin_dir, self.cni_conf_dir))
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*self.netns_prefix, CONTAINERD, "--config", self.config_path],
                                     stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited ({self.proc.returncode}): {self.log_tail()}")
            if os.path.exists(self.address) and self.ctr("version", check=False).returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"containerd not ready in {timeout}s: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    # -- ctr ---------------------------------------------------------------

    def _ctr_cmd(self, *args: str) -> list[str]:
        return [CTR, "--address", self.address, "--namespace", NAMESPACE, *args]

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self._ctr_cmd(*args), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}")
        return proc

    def _in_cni_namespace(self, cmd: list[str]) -> list[str]:
        script = _cni_mounts_script(self.base, self.cni_bin_dir, self.cni_conf_dir)
        script += "\nexec " + " ".join(shlex.quote(c) for c in cmd)
        return [*self.netns_prefix, "unshare", "--mount", "--propagation", "private", "sh", "-c", script]

    def import_image(self, archive: str) -> None:
        self.ctr("images", "import", archive)

    def run_with_cni(self, image: str, name: str, *command: str, timeout: float = 60) -> None:
        """``ctr run --cni --rm`` in the foreground (so ctr itself removes the
        network when the task exits), started in the background here; returns
        once the task is running."""
        cmd = self._in_cni_namespace(self._ctr_cmd(
            "run", "--cni", "--rm", "--fifo-dir", f"{self.base}/fifo", "--runc-root", f"{self.base}/runc",
            image, name, *command))
        log = open(f"{self.base}/ctr-{name}.log", "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, start_new_session=True)
        log.close()
        self.foreground[name] = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ctr run {name} exited ({proc.returncode}): {self.ctr_log(name)}")
            tasks = self.ctr("tasks", "ls", check=False).stdout
            if any(line.split()[:1] == [name] and "RUNNING" in line for line in tasks.splitlines()):
                return
            time.sleep(0.1)
        raise RuntimeError(f"container {name} not running after {timeout}s: {self.ctr_log(name)}")

    def ctr_log(self, name: str) -> str:
        try:
            with open(f"{self.base}/ctr-{name}.log") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def exec(self, name: str, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        exec_id = f"x{time.monotonic_ns() % 10**9}"
        return self.ctr("tasks", "exec", "--fifo-dir", f"{self.base}/fifo", "--exec-id", exec_id, name, *command,
                        check=False, timeout=timeout)

    def stop_container(self, name: str, timeout: float = 60) -> int:
        """Kill the task; the foreground ``ctr run`` then runs CNI DEL and
        removes the container. Returns ctr's exit status."""
        self.ctr("tasks", "kill", "--signal", "SIGKILL", name, check=False)
        proc = self.foreground.pop(name)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise RuntimeError(f"ctr run {name} did not exit after its task was killed: {self.ctr_log(name)}")

    # -- teardown ----------------------------------------------------------

    def _shim_pids(self) -> list[int]:
        pids = []
        task_dir = f"{self.base}/state/io.containerd.runtime.v2.task/{NAMESPACE}"
        if os.path.isdir(task_dir):
            for cid in os.listdir(task_dir):
                try:
                    with open(f"{task_dir}/{cid}/shim.pid") as f:
                        pids.append(int(f.read().strip()))
                except (OSError, ValueError):
                    pass
        return pids

    def stop(self) -> None:
        """Remove every task and container, stop containerd, unmount and delete its dirs."""
        for name, proc in list(self.foreground.items()):
            self.ctr("tasks", "kill", "--signal", "SIGKILL", name, check=False, timeout=30)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.foreground.clear()
        if self.proc is not None and self.proc.poll() is None:
            for line in self.ctr("tasks", "ls", "-q", check=False, timeout=30).stdout.split():
                self.ctr("tasks", "kill", "--signal", "SIGKILL", line, check=False, timeout=30)
                self.ctr("tasks", "delete", "--force", line, check=False, timeout=30)
            for line in self.ctr("containers", "ls", "-q", check=False, timeout=30).stdout.split():
                self.ctr("containers", "delete", line, check=False, timeout=30)
        shims = self._shim_pids()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        for pid in shims:  # started by our containerd; gone unless a task was left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._unmount_all()
        shutil.rmtree(self.base, ignore_errors=True)
        if self._created_state_root:  # only empty dirs: another containerd may have started since
            for d in (f"{STATE_ROOT}/s", f"{STATE_ROOT}/fifo", f"{STATE_ROOT}/runc/{NAMESPACE}",
                      f"{STATE_ROOT}/runc", STATE_ROOT):
                try:
                    os.rmdir(d)
                except OSError:
                    pass

    def _unmount_all(self) -> None:
        with open("/proc/self/mounts") as f:
            targets = [line.split()[1] for line in f]
        for target in sorted((t for t in targets if t.startswith(self.base + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True)

    def __enter__(self) -> "PrivateContainerd":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
